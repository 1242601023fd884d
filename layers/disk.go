package layers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// DefaultBlockSize is the block size of block volumes created without
// one. 1,000 scattered 4 KiB writes into a 4 GiB volume store at most
// 1,000 blocks: 64 MiB at 64 KiB (the limit is 128 MiB), 256 MiB at
// 256 KiB, so 64 KiB is the largest power of two within the limit.
// Smaller blocks cost more per byte on sequential writes (a chunk id,
// index entry and block record per block). BenchmarkDiskSequentialWrite
// (256 MiB of random data plus commit, memstore with SHA-256 ids, shared
// 2-core box, go test -bench DiskSequential -benchtime 2x) gave 16 KiB
// 132 MB/s, 64 KiB 206 MB/s, 256 KiB 140 MB/s, 1 MiB 146 MB/s: above
// 64 KiB the per-block overhead no longer dominates.
const DefaultBlockSize = 64 << 10

// maxDirtyBytes bounds a staging disk's buffered blocks; past it the
// buffered blocks are written out.
const maxDirtyBytes = 64 << 20

// disk is the implementation behind Disk.
type disk struct {
	v        *volume
	seq      uint64 // revision disks: the sealed layer's seq
	staging  bool
	readOnly bool
	size     int64
	bs       int64

	// mu guards dirty and the overlay state: reads hold it shared,
	// writes and flushes exclusively, so a read never sees a block
	// half-way between the buffer and its record.
	mu    sync.RWMutex
	dirty map[int64][]byte // staging: buffered whole blocks by index
	ov    *overlay         // overlays: the private copy-on-write layer
	base  *Disk            // overlays: what the overlay covers
	// marked: what the unflushed marker of a staging disk says (blocks;
	// 0: no marker); guarded by mu.
	marked int64
	closed atomic.Bool
}

func (v *volume) newDisk(seq uint64, staging bool) *Disk {
	d := &Disk{disk{v: v, seq: seq, staging: staging, readOnly: !staging, size: v.rec.Size, bs: int64(v.rec.BlockSize)}}
	if staging {
		d.dirty = map[int64][]byte{}
	}
	return d
}

func (v *volume) stagingDisk() *Disk {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sdisk
}

// StagingDisk returns the writable head of a block volume (one per
// volume; every call returns the same one).
func (r *Repo) StagingDisk(ctx context.Context, volume string) (*Disk, error) {
	v, err := r.volume(volume)
	if err != nil {
		return nil, err
	}
	if v.rec.Type != TypeBlock {
		return nil, fmt.Errorf("staging disk of volume %q: %w", volume, ErrWrongType)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sdisk == nil {
		v.sdisk = v.newDisk(0, true)
	}
	return v.sdisk, nil
}

// RevisionDisk returns a block volume at revision id, read-only.
func (r *Repo) RevisionDisk(ctx context.Context, volume, id string) (*Disk, error) {
	v, err := r.volume(volume)
	if err != nil {
		return nil, err
	}
	if v.rec.Type != TypeBlock {
		return nil, fmt.Errorf("revision disk of volume %q: %w", volume, ErrWrongType)
	}
	rr, err := v.revision(id)
	if err != nil {
		return nil, err
	}
	return v.newDisk(rr.Seq, false), nil
}

// Size is the device size in bytes.
func (d *Disk) Size() int64 { return d.size }

// BlockSize is the volume's block size.
func (d *Disk) BlockSize() int { return int(d.bs) }

// ReadOnly reports whether writes fail with ErrReadOnly.
func (d *Disk) ReadOnly() bool { return d.readOnly }

func (d *Disk) at() uint64 {
	if d.staging {
		return d.v.seq.Load()
	}
	return d.seq
}

func (d *Disk) check(op string, off, n int64) error {
	if d.closed.Load() {
		return fmt.Errorf("%s: disk closed: %w", op, ErrInvalid)
	}
	if off < 0 || n < 0 || off+n > d.size || off+n < off {
		return fmt.Errorf("%s at %d+%d beyond device of %d bytes: %w", op, off, n, d.size, ErrInvalid)
	}
	return nil
}

// blockID returns the stored chunk of block idx (zero id = hole).
func (d *Disk) blockID(txn *badger.Txn, idx int64) (chunk.ID, error) {
	var id chunk.ID
	b, _, err := getVersion(sealed(txn), d.v.id, rkIno(recBlock, uint64(idx)), d.at())
	if err != nil {
		if isNotFound(err) {
			return id, nil
		}
		return id, err
	}
	if len(b) != len(id) {
		return id, fmt.Errorf("block %d: bad record", idx)
	}
	copy(id[:], b)
	return id, nil
}

// readStored fills p (within block idx, from offset in) from the store.
func (d *Disk) readStored(ctx context.Context, idx, in int64, p []byte) error {
	var id chunk.ID
	err := d.v.r.db.View(func(txn *badger.Txn) error {
		var err error
		id, err = d.blockID(txn, idx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read block %d: %w", idx, err)
	}
	if id.IsZero() {
		clear(p)
		return nil
	}
	data, err := d.v.r.getChunk(ctx, id)
	if err != nil {
		return fmt.Errorf("read block %d: %w", idx, err)
	}
	if int64(len(data)) != d.bs {
		return fmt.Errorf("read block %d: chunk of %d bytes", idx, len(data))
	}
	copy(p, data[in:])
	return nil
}

// ReadAt reads; holes read as zeros. Errors past the end: ErrInvalid.
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.readLocked(ctx, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *Disk) readLocked(ctx context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		idx, in := off/d.bs, off%d.bs
		n := min(int64(len(p)), d.bs-in)
		var err error
		switch {
		case d.ov != nil:
			err = d.ov.read(ctx, d.base, idx, in, p[:n])
		case d.dirty != nil && d.dirty[idx] != nil:
			copy(p[:n], d.dirty[idx][in:])
		default:
			err = d.readStored(ctx, idx, in, p[:n])
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteAt writes; returns once buffered (durable after Flush).
// Errors: ErrReadOnly, ErrInvalid (beyond the end), ErrNoSpace.
func (d *Disk) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, fmt.Errorf("write: %w", ErrReadOnly)
	}
	if err := d.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if d.ov != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.ov.write(ctx, d.base, p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	d.v.commitMu.RLock()
	defer d.v.commitMu.RUnlock()
	d.v.noteChange(d.v.r.now())
	d.mu.Lock()
	defer d.mu.Unlock()
	for q, o := p, off; len(q) > 0; {
		idx, in := o/d.bs, o%d.bs
		n := min(int64(len(q)), d.bs-in)
		blk := d.dirty[idx]
		if blk == nil {
			blk = make([]byte, d.bs)
			// Read-modify-write once per block while it is buffered,
			// not once per request.
			if n < d.bs {
				if err := d.readStored(ctx, idx, 0, blk); err != nil {
					return 0, err
				}
			}
			d.dirty[idx] = blk
		}
		copy(blk[in:], q[:n])
		q, o = q[n:], o+n
	}
	if err := d.makeRoom(ctx); err != nil {
		return 0, err
	}
	if err := d.markUnflushed(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Zero makes [off, off+length) read as zeros; whole blocks become holes
// (TRIM and WRITE_ZEROES).
func (d *Disk) Zero(ctx context.Context, off, length int64) error {
	if d.readOnly {
		return fmt.Errorf("zero: %w", ErrReadOnly)
	}
	if err := d.check("zero", off, length); err != nil {
		return err
	}
	if d.ov != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.ov.zero(ctx, d.base, off, length)
	}
	d.v.commitMu.RLock()
	defer d.v.commitMu.RUnlock()
	d.v.noteChange(d.v.r.now())
	d.mu.Lock()
	defer d.mu.Unlock()
	// A buffered all-zero block becomes a hole when flushed; zeroing
	// whole blocks through the buffer keeps one code path, and the buffer
	// bound below flushes long runs as they go.
	end := off + length
	for off < end {
		idx, in := off/d.bs, off%d.bs
		n := min(end-off, d.bs-in)
		if n == d.bs {
			d.dirty[idx] = make([]byte, d.bs)
		} else {
			blk := d.dirty[idx]
			if blk == nil {
				blk = make([]byte, d.bs)
				if err := d.readStored(ctx, idx, 0, blk); err != nil {
					return err
				}
				d.dirty[idx] = blk
			}
			clear(blk[in : in+n])
		}
		off += n
		if err := d.makeRoom(ctx); err != nil {
			return err
		}
	}
	return d.markUnflushed()
}

// makeRoom flushes the buffer once it is over its bound; mu held. With the
// store full, blocks it takes no more stay buffered while zeroed ones go
// as holes, so it fails only when the flush freed nothing: zeroing or
// trimming what did not fit must go on while data is refused.
func (d *Disk) makeRoom(ctx context.Context) error {
	if int64(len(d.dirty))*d.bs <= maxDirtyBytes {
		return nil
	}
	before := len(d.dirty)
	if err := d.flushLocked(ctx); err != nil && len(d.dirty) >= before {
		return err
	}
	return nil
}

// flushDirty writes the buffered blocks into the staging layer.
func (d *Disk) flushDirty(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flushLocked(ctx)
}

func (d *Disk) dropDirty() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dirty = map[int64][]byte{}
	d.closed.Store(true)
}

// flush is flushDirty for Repo.Close.
func (d *Disk) flush(ctx context.Context) error { return d.flushDirty(ctx) }

// flushLocked stores every buffered block (all-zero ones as holes) and
// records them in the staging layer; mu held.
func (d *Disk) flushLocked(ctx context.Context) error {
	if len(d.dirty) == 0 {
		return nil
	}
	v := d.v
	idxs := make([]int64, 0, len(d.dirty))
	for idx := range d.dirty {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	ids := make([]chunk.ID, len(idxs))
	var put []chunk.ID
	// With the store full, the blocks it takes no more stay buffered and
	// the rest (zeroed ones above all) are recorded: zeroing or trimming
	// what did not fit is how a user makes room on a full disk.
	var full error
	unstored := make([]bool, len(idxs))
	for i, idx := range idxs {
		blk := d.dirty[idx]
		if chunk.IsZero(blk) {
			continue
		}
		if full != nil {
			unstored[i] = true // the store said full: do not ask per block
			continue
		}
		id, added, err := v.r.cs.Put(ctx, chunk.KindData, blk)
		if err != nil && errors.Is(err, syscall.ENOSPC) {
			full = storeErr(fmt.Sprintf("store block %d", idx), err)
			unstored[i] = true
			continue
		}
		if err != nil {
			v.r.releaseLog(ctx, put)
			return storeErr(fmt.Sprintf("store block %d", idx), err)
		}
		if added {
			v.added.Add(d.bs)
		}
		ids[i] = id
		put = append(put, id)
	}
	// Write the records in batches that fit a badger transaction.
	var release []chunk.ID
	storeFlushed := false
	const perTxn = 2048
	for start := 0; start < len(idxs); start += perTxn {
		end := min(start+perTxn, len(idxs))
		v.mu.Lock()
		seq := v.seq.Load()
		var rel []chunk.ID
		// Old versions are read in a read-only transaction: iterators in
		// a read-write one sort its pending writes each time, which makes
		// a large batch quadratic. v.mu keeps them current meanwhile.
		oseqs := make([]uint64, end-start)
		err := v.r.db.View(func(txn *badger.Txn) error {
			for i := start; i < end; i++ {
				old, oseq, err := getVersion(sealed(txn), v.id, rkIno(recBlock, uint64(idxs[i])), seq)
				if err != nil && !isNotFound(err) {
					return err
				}
				oseqs[i-start] = oseq
				if err == nil && oseq == seq {
					var oid chunk.ID
					copy(oid[:], old)
					rel = append(rel, oid)
				}
			}
			return nil
		})
		if err == nil && !storeFlushed && len(rel) > 0 {
			// A block version staging wrote may have been made durable
			// (FLUSH); the chunk replacing it must be durable before it
			// goes, or a crash would fall back past the acknowledged data.
			if err = v.r.cs.Flush(ctx); err != nil {
				err = storeErr("flush store", err)
			}
			storeFlushed = true
		}
		if err == nil {
			w := &writer{b: &batch{}, vid: v.id, seq: seq}
			err = func() error {
				for i := start; i < end; i++ {
					if unstored[i] {
						continue
					}
					rk := rkIno(recBlock, uint64(idxs[i]))
					var err error
					if ids[i].IsZero() {
						if oseqs[i-start] == 0 {
							continue // a hole never written stays implicit
						}
						err = w.tombstone(rk)
					} else {
						err = w.put(rk, append([]byte{valLive}, ids[i][:]...))
					}
					if err != nil {
						return err
					}
				}
				// The references first, as before every staging batch
				// (refSaver): a block record in the index must not
				// outlive a crash that loses its chunk's reference.
				if err := v.r.saveRefs(); err != nil {
					return err
				}
				return update(v.r.db, w.b.writeTo)
			}()
		}
		v.mu.Unlock()
		if err != nil {
			return fmt.Errorf("record blocks: %w", err)
		}
		release = append(release, rel...)
		for i := start; i < end; i++ {
			if !unstored[i] {
				delete(d.dirty, idxs[i])
			}
		}
	}
	v.r.releaseLog(ctx, release)
	// The buffer shrank (emptied, unless the store is full): the marker
	// follows, after the records above are in the index.
	if err := d.markUnflushed(); err != nil && full == nil {
		return err
	}
	return full
}

// Flush makes every write that returned durable.
func (d *Disk) Flush(ctx context.Context) error {
	if d.ov != nil || d.readOnly {
		return nil // overlays are throwaway; revisions are durable
	}
	if err := d.flushDirty(ctx); err != nil {
		return err
	}
	return d.v.r.durable(ctx)
}

// Extents reports data and hole runs in [off, off+length).
func (d *Disk) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	if err := d.check("extents", off, length); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.extentsLocked(ctx, off, length)
}

func (d *Disk) extentsLocked(ctx context.Context, off, length int64) ([]Extent, error) {
	var out []Extent
	add := func(o, l int64, hole bool) {
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole && out[k].Off+out[k].Len == o {
			out[k].Len += l
			return
		}
		out = append(out, Extent{Off: o, Len: l, Hole: hole})
	}
	end := off + length
	err := d.v.r.db.View(func(txn *badger.Txn) error {
		for o := off; o < end; {
			idx, in := o/d.bs, o%d.bs
			n := min(end-o, d.bs-in)
			var hole bool
			switch {
			case d.ov != nil:
				h, known := d.ov.hole(idx)
				if !known {
					d.base.mu.RLock()
					ext, err := d.base.extentsLocked(ctx, o, n)
					d.base.mu.RUnlock()
					if err != nil {
						return err
					}
					for _, e := range ext {
						add(e.Off, e.Len, e.Hole)
					}
					o += n
					continue
				}
				hole = h
			case d.dirty != nil && d.dirty[idx] != nil:
				hole = chunk.IsZero(d.dirty[idx])
			default:
				id, err := d.blockID(txn, idx)
				if err != nil {
					return err
				}
				hole = id.IsZero()
			}
			add(o, n, hole)
			o += n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("extents: %w", err)
	}
	return out, nil
}

// Close releases the view (and drops an overlay's writes). Closing the
// staging disk writes its buffered blocks into the staging layer and
// leaves it usable: it is shared by everyone who asked for it.
func (d *Disk) Close() error {
	switch {
	case d.ov != nil:
		d.mu.Lock()
		defer d.mu.Unlock()
		d.closed.Store(true)
		return d.ov.close()
	case d.staging:
		return d.flushDirty(context.Background())
	}
	return nil
}
