// Package nbdtest has exports and a resolver for testing NBD serving without
// a repository: a sparse in-memory disk and a sparse file, both
// implementing every optional nbd interface.
package nbdtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/nbd"
)

// MemOptions configure NewMem.
type MemOptions struct {
	ReadOnly  bool
	BlockSize int // default 64 KiB; all-zero blocks are holes
}

// Mem is a sparse in-memory disk. Writes of all-zero blocks, Zero and
// out-of-range requests behave as layers.Disk documents them.
type Mem struct {
	size int64
	bs   int64
	ro   bool

	flushes atomic.Int64
	closes  atomic.Int64

	mu     sync.RWMutex     // guards blocks and fail
	blocks map[int64][]byte // block index → contents; absent = hole
	fail   []failure
}

type failure struct {
	off, end int64
	err      error
}

var (
	_ nbd.Export     = (*Mem)(nil)
	_ nbd.Flusher    = (*Mem)(nil)
	_ nbd.Zeroer     = (*Mem)(nil)
	_ nbd.Extenter   = (*Mem)(nil)
	_ nbd.BlockSizer = (*Mem)(nil)
)

// NewMem returns an all-hole disk of size bytes.
func NewMem(size int64, opts MemOptions) *Mem {
	bs := int64(opts.BlockSize)
	if bs <= 0 {
		bs = 64 << 10
	}
	return &Mem{size: size, bs: bs, ro: opts.ReadOnly, blocks: make(map[int64][]byte)}
}

// Fill writes p at off even on a read-only disk (test setup).
func (m *Mem) Fill(p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.write(p, off)
}

// FailRange makes every read or write touching [off, off+length) fail with
// err, to test error replies.
func (m *Mem) FailRange(off, length int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = append(m.fail, failure{off, off + length, err})
}

// Flushes counts Flush calls; Closes counts Close calls.
func (m *Mem) Flushes() int64 { return m.flushes.Load() }
func (m *Mem) Closes() int64  { return m.closes.Load() }

// Size is the disk size.
func (m *Mem) Size() int64 { return m.size }

// ReadOnly reports whether writes fail.
func (m *Mem) ReadOnly() bool { return m.ro }

// BlockSize is the hole granularity.
func (m *Mem) BlockSize() int { return int(m.bs) }

func (m *Mem) check(off, n int64) error {
	if off < 0 || n < 0 || off > m.size || n > m.size-off {
		return fmt.Errorf("%d bytes at %d on a %d byte disk: %w", n, off, m.size, layers.ErrInvalid)
	}
	for _, f := range m.fail {
		if off < f.end && f.off < off+n {
			return f.err
		}
	}
	return nil
}

// ReadAt reads; holes read as zeros.
func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		bi, bo := pos/m.bs, pos%m.bs
		n := min(int64(len(p)-done), m.bs-bo)
		if b := m.blocks[bi]; b != nil {
			copy(p[done:done+int(n)], b[bo:bo+n])
		} else {
			clear(p[done : done+int(n)])
		}
		done += int(n)
	}
	return len(p), nil
}

// WriteAt writes; all-zero blocks become holes.
func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if m.ro {
		return 0, layers.ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *Mem) write(p []byte, off int64) error {
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		bi, bo := pos/m.bs, pos%m.bs
		n := min(int64(len(p)-done), m.bs-bo)
		b := m.blocks[bi]
		if b == nil {
			b = make([]byte, m.bs)
		}
		copy(b[bo:bo+n], p[done:done+int(n)])
		if allZero(b) {
			delete(m.blocks, bi)
		} else {
			m.blocks[bi] = b
		}
		done += int(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Zero makes the range read as zeros; whole blocks become holes.
func (m *Mem) Zero(ctx context.Context, off, length int64) error {
	if m.ro {
		return layers.ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, length); err != nil {
		return err
	}
	for pos, end := off, off+length; pos < end; {
		bi, bo := pos/m.bs, pos%m.bs
		n := min(end-pos, m.bs-bo)
		if b := m.blocks[bi]; b != nil {
			clear(b[bo : bo+n])
			if allZero(b) {
				delete(m.blocks, bi)
			}
		}
		pos += n
	}
	return nil
}

// Flush counts; memory is as durable as it gets.
func (m *Mem) Flush(ctx context.Context) error {
	m.flushes.Add(1)
	return nil
}

// Extents reports data blocks and holes in [off, off+length).
func (m *Mem) Extents(ctx context.Context, off, length int64) ([]layers.Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, length); err != nil {
		return nil, err
	}
	var out []layers.Extent
	for pos, end := off, off+length; pos < end; {
		bi, bo := pos/m.bs, pos%m.bs
		n := min(end-pos, m.bs-bo)
		hole := m.blocks[bi] == nil
		if k := len(out); k > 0 && out[k-1].Hole == hole {
			out[k-1].Len += n
		} else {
			out = append(out, layers.Extent{Off: pos, Len: n, Hole: hole})
		}
		pos += n
	}
	return out, nil
}

// Close counts; the contents stay for the next Open.
func (m *Mem) Close() error {
	m.closes.Add(1)
	return nil
}

// Resolver serves a fixed set of exports by name.
type Resolver struct {
	mu      sync.Mutex
	exports map[string]nbd.Export
	opens   map[string]int
}

// NewResolver returns a resolver for exports.
func NewResolver(exports map[string]nbd.Export) *Resolver {
	return &Resolver{exports: maps.Clone(exports), opens: make(map[string]int)}
}

// Open returns the export called name.
func (r *Resolver) Open(ctx context.Context, name string) (nbd.Export, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.exports[name]
	if !ok {
		return nil, fmt.Errorf("%q: %w", name, nbd.ErrUnknownExport)
	}
	r.opens[name]++
	return e, nil
}

// Opens counts Open calls for name.
func (r *Resolver) Opens(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opens[name]
}

// List returns the export names, sorted.
func (r *Resolver) List(ctx context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.exports)), nil
}

// ErrInjected is a convenient error for FailRange.
var ErrInjected = errors.New("injected I/O error")
