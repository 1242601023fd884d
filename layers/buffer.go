package layers

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Small files (what rsync mostly writes) are buffered in memory: opening,
// writing and removing a spool file per file cost more than the rest of
// the write path together. A file moves to a sparse spool file once it
// grows past memFileMax or the repository's memory budget is spent.
const (
	memFileMax   = 1 << 20
	memBudgetMax = 64 << 20
)

// spoolBuf holds a dirty file's image: in memory (mem, zeros past its end
// up to the file size) or in a sparse spool file.
type spoolBuf struct {
	r       *Repo
	name    string // spool file name, used when the buffer spills to disk
	mem     []byte
	charged int64 // bytes of r.memUsed held by mem's capacity
	file    *os.File
	path    string
}

func (r *Repo) newSpoolBuf(name string) *spoolBuf {
	return &spoolBuf{r: r, name: name + "." + strconv.FormatUint(r.spoolSeq.Add(1), 10)}
}

// reserve charges n more bytes of memory; false when the budget is spent.
func (b *spoolBuf) reserve(n int64) bool {
	if b.r.memUsed.Add(n) > memBudgetMax {
		b.r.memUsed.Add(-n)
		return false
	}
	b.charged += n
	return true
}

// spill moves the buffer into a spool file.
func (b *spoolBuf) spill() error {
	if err := b.r.takeSpool(int64(len(b.mem))); err != nil {
		return err
	}
	b.path = filepath.Join(b.r.opts.SpoolDir, b.name)
	f, err := os.OpenFile(b.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return spoolErr("create spool", err)
	}
	if len(b.mem) > 0 {
		if _, err := f.WriteAt(b.mem, 0); err != nil {
			_ = f.Close()
			_ = os.Remove(b.path)
			return spoolErr("write spool", err)
		}
	}
	b.file = f
	b.freeMem()
	return nil
}

func (b *spoolBuf) freeMem() {
	b.mem = nil
	b.r.memUsed.Add(-b.charged)
	b.charged = 0
}

func (b *spoolBuf) writeAt(p []byte, off int64) (int, error) {
	if b.file == nil {
		end := off + int64(len(p))
		if end <= memFileMax {
			if end > int64(cap(b.mem)) {
				c := min(max(end, 2*int64(cap(b.mem)), 4096), memFileMax)
				if b.reserve(c - int64(cap(b.mem))) {
					nm := make([]byte, len(b.mem), c)
					copy(nm, b.mem)
					b.mem = nm
				} else if err := b.spill(); err != nil {
					return 0, err
				}
			}
			if b.file == nil {
				if end > int64(len(b.mem)) {
					b.mem = b.mem[:end] // fresh capacity is zeroed; shrinks clear below
				}
				return copy(b.mem[off:], p), nil
			}
		} else if err := b.spill(); err != nil {
			return 0, err
		}
	}
	if err := b.r.takeSpool(int64(len(p))); err != nil {
		return 0, err
	}
	n, err := b.file.WriteAt(p, off)
	if err != nil {
		return n, spoolErr("write spool", err)
	}
	return n, nil
}

// readAt fills p from off; the caller clips p to the file size.
func (b *spoolBuf) readAt(p []byte, off int64) error {
	if b.file == nil {
		n := 0
		if off < int64(len(b.mem)) {
			n = copy(p, b.mem[off:])
		}
		clear(p[n:])
		return nil
	}
	n, err := b.file.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		err = nil
	}
	if err != nil {
		return fmt.Errorf("read spool: %w", err)
	}
	return nil
}

func (b *spoolBuf) truncate(size int64) error {
	if b.file == nil {
		if size < int64(len(b.mem)) {
			clear(b.mem[size:])
			b.mem = b.mem[:size]
		}
		return nil
	}
	if err := b.file.Truncate(size); err != nil {
		return spoolErr("truncate spool", err)
	}
	return nil
}

// punch frees the spool's space for [off, off+n), which reads as zeros.
func (b *spoolBuf) punch(off, n int64) error {
	if b.file == nil || n <= 0 {
		return nil
	}
	if err := unix.Fallocate(int(b.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("punch spool: %w", err)
	}
	return nil
}

// dataRuns calls fn for each run of possibly non-zero data in [off, end).
func (b *spoolBuf) dataRuns(off, end int64, fn func(o, l int64) error) error {
	if b.file == nil {
		if e := min(end, int64(len(b.mem))); e > off {
			return fn(off, e-off)
		}
		return nil
	}
	fd := int(b.file.Fd())
	for off < end {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return nil
		}
		if err != nil {
			return fmt.Errorf("seek spool: %w", err)
		}
		if d >= end {
			return nil
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek spool: %w", err)
		}
		h = min(h, end)
		if err := fn(d, h-d); err != nil {
			return err
		}
		off = h
	}
	return nil
}

// section returns a reader of [off, off+n).
func (b *spoolBuf) section(off, n int64) io.Reader {
	if b.file == nil {
		return &zeroTailReader{b: b.mem, off: off, end: off + n}
	}
	return io.NewSectionReader(b.file, off, n)
}

type zeroTailReader struct {
	b        []byte
	off, end int64
}

func (z *zeroTailReader) Read(p []byte) (int, error) {
	if z.off >= z.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), z.end-z.off)]
	n := 0
	if z.off < int64(len(z.b)) {
		n = copy(p, z.b[z.off:])
	}
	clear(p[n:])
	z.off += int64(len(p))
	return len(p), nil
}

func (b *spoolBuf) close() {
	if b.file != nil {
		_ = b.file.Close()
		_ = os.Remove(b.path)
		b.file = nil
	}
	b.freeMem()
}
