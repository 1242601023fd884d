package layers

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
)

// A staging file's data lives in two places until its flush: chunks in
// the store, listed in openFile.stored, and the spool (a memory buffer or
// a sparse file under REPO/spool). stored is sorted, its extents do not
// overlap, and each holds one store reference that the open file owns
// (or is a zeroID extent: written zeros, not stored). A byte offset below
// the size inside a stored extent reads from its chunk, whatever the
// spool holds there; any other reads from the spool, where a hole is
// zeros. Punching may fail and the memory buffer cannot punch, so stale
// bytes can sit in the spool under a stored extent: whatever looks for
// the spool's data (reads, listings, early stores, the flush) takes only
// the parts between stored extents (spoolRuns).
//
// Two things fill stored:
//
//   - The base. Opening a file with content for writing (rsync --inplace,
//     dd conv=notrunc, a VM image or a database rewritten in place) does
//     not copy it into the spool: load takes one store reference per
//     chunk of the stored extent map (ChunkStore.Retain) and lists them.
//     Copying read, spooled and chunked the whole file for any change:
//     a 4 KiB dd conv=notrunc into a 2 GiB file and its fsync took 4.3 s
//     and 2 GiB of spool; now 0.04 s and 1.5 MiB (the chunk it touched).
//     The references are taken at load, not at the flush, so that from
//     then on the file owns its stored extents whatever happens to the
//     version it loaded (prune keeps what staging sees, but a flush
//     replacing a map staging wrote, or an unlink, releases that map's
//     chunks), and a base chunk and an early one are handled alike by
//     a write, a truncate, forget and the flush.
//   - Early stores. A file that gained Options.EarlyStore bytes of spool
//     since its last store, or whose spool filesystem is full, chunks
//     its spool data now and punches it out of the spool, so a file
//     larger than the free space there (rsync of a 30 GiB file) can still
//     be written. The last chunk of data ending at the size stays in the
//     spool: appends change it, and leaving it keeps the chunks the same
//     as those of one flush of the whole file (dedup does not change).
//
// A write takes back into the spool only the stored extents it overlaps
// (retreat: read the chunk, write it to the spool, drop the reference);
// a truncate drops those past the new size and takes back one that
// straddles it. The flush chunks only the spool's runs, which lie between
// stored extents and so start and end at old chunk boundaries: the chunks
// of untouched parts carry over into the new extent map as they are.

// defaultEarlyStore is Options.EarlyStore's default: a file writing past it
// stores its data so far. Below it nothing changes (the benchmark corpus
// has no file this large); above, a write waits for the chunking of this
// much data, once per this much written.
const defaultEarlyStore = 256 << 20

// zeroID marks a stored extent of written zeros: counted as written (see
// flush) but not stored. It never leaves this file: storedData filters it.
var zeroID chunk.ID

// storedData returns the stored extents that hold chunks.
func (f *openFile) storedData() []extent {
	out := make([]extent, 0, len(f.stored))
	for _, e := range f.stored {
		if e.ID != zeroID {
			out = append(out, e)
		}
	}
	return out
}

// storedLen is how many bytes the stored extents cover (data or zeros).
func (f *openFile) storedLen() int64 {
	var n int64
	for _, e := range f.stored {
		n += e.Len
	}
	return n
}

// releaseStored drops the store references of stored extents; used when
// they will never be part of an extent map.
func (f *openFile) releaseStored(ctx context.Context, es []extent) {
	var ids []chunk.ID
	for _, e := range es {
		if e.ID != zeroID {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	if err := f.v.r.cs.Release(ctx, ids); err != nil {
		f.v.r.log.Warn("release chunks of a staging file", "ino", f.ino, "err", err)
	}
}

// storedFrom returns the index of the first stored extent that ends after
// off: a read or a listing costs a search, not a pass over every chunk of
// the file (about 100k for a 100 GiB image).
func (f *openFile) storedFrom(off int64) int {
	return sort.Search(len(f.stored), func(i int) bool { return f.stored[i].Off+f.stored[i].Len > off })
}

// storedIn returns the stored extents that overlap [off, end).
func (f *openFile) storedIn(off, end int64) []extent {
	i := f.storedFrom(off)
	j := i
	for j < len(f.stored) && f.stored[j].Off < end {
		j++
	}
	return f.stored[i:j]
}

// spoolRuns calls fn for each run of possibly non-zero spool data in
// [off, end) that no stored extent covers, in offset order. fn must not
// change stored.
func (f *openFile) spoolRuns(off, end int64, fn func(o, l int64) error) error {
	if off >= end {
		return nil
	}
	return f.buf.dataRuns(off, end, func(o, l int64) error {
		e := o + l
		for _, s := range f.storedIn(o, e) {
			if s.Off > o {
				if err := fn(o, s.Off-o); err != nil {
					return err
				}
			}
			o = s.Off + s.Len
		}
		if o < e {
			return fn(o, e-o)
		}
		return nil
	})
}

// mergeExtents merges two sorted lists of extents that do not overlap
// into a new sorted list.
func mergeExtents(a, b []extent) []extent {
	out := make([]extent, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Off < b[0].Off {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// storeEarly puts the spool's data runs into the store, up to the last
// chunk boundary for the run that ends at the size, and punches them out
// of the spool; dataMu held. It reports whether anything was stored.
func (f *openFile) storeEarly(ctx context.Context) (bool, error) {
	f.sinceStore = 0 // tried: the next try waits for as much again
	if f.buf == nil || f.buf.file == nil {
		return false, nil // small files stay in memory
	}
	f.mu.Lock()
	size := f.size
	f.mu.Unlock()
	type run struct{ off, len int64 }
	var runs []run
	if err := f.spoolRuns(0, size, func(o, l int64) error {
		runs = append(runs, run{o, l})
		return nil
	}); err != nil {
		return false, err
	}
	var es []extent
	var punch []run // what went to the store, to free in the spool
	for i, rn := range runs {
		end := rn.off + rn.len
		growing := i == len(runs)-1 && end == size
		next := end
		put := func(data []byte, off int64) error {
			if growing && off+int64(len(data)) == end {
				next = off // the chunk appends would change stays
				return nil
			}
			id := zeroID
			if !chunk.IsZero(data) {
				var added bool
				var err error
				if id, added, err = f.v.r.cs.Put(ctx, chunk.KindData, data); err != nil {
					return storeErr("store chunk", err)
				}
				if added {
					f.v.added.Add(int64(len(data)))
				}
			}
			es = append(es, extent{Off: off, Len: int64(len(data)), ID: id})
			return nil
		}
		if err := f.v.r.split.split(f.buf.section(rn.off, rn.len), rn.off, rn.len, put); err != nil {
			f.releaseStored(ctx, es)
			return false, err
		}
		if next > rn.off {
			punch = append(punch, run{rn.off, next - rn.off})
		}
	}
	if len(es) == 0 {
		return false, nil
	}
	// Punching only frees space: reads and flushes never look at the
	// spool under a stored extent, so a filesystem without hole
	// punching still works.
	for _, p := range punch {
		if err := f.buf.punch(p.off, p.len); err != nil {
			f.v.r.log.Debug("punch spool", "ino", f.ino, "err", err)
			break
		}
	}
	f.stored = mergeExtents(f.stored, es)
	return true, nil
}

// retreat makes [lo, hi) writable again by moving the stored extents that
// overlap it back into the spool and dropping their references; dataMu
// held. On error nothing changed: reads still use the stored extents,
// which hide whatever part was copied.
func (f *openFile) retreat(ctx context.Context, lo, hi int64) error {
	if hi <= lo {
		return nil
	}
	i := f.storedFrom(lo)
	back := f.storedIn(lo, hi)
	if len(back) == 0 {
		return nil
	}
	var copied int64
	for _, e := range back {
		// A zeroID extent was zeros when it was stored, and stale
		// bytes may sit in the spool beneath it (a punch that failed):
		// writing zeros there makes the spool say what the extent did.
		data := make([]byte, e.Len)
		if e.ID != zeroID {
			c, err := f.v.r.getChunk(ctx, e.ID)
			if err != nil {
				return fmt.Errorf("read back chunk at %d: %w", e.Off, err)
			}
			if int64(len(c)) != e.Len {
				return fmt.Errorf("chunk %s: length %d, extent says %d", e.ID.Short(), len(c), e.Len)
			}
			data = c
		}
		if _, err := f.buf.writeAt(data, e.Off); err != nil {
			return err
		}
		copied += e.Len
	}
	// The spool grew by what came back: count it, or random writes into
	// a large file (each taking back a whole chunk) would spool far
	// more than EarlyStore between stores.
	f.sinceStore += copied
	back = slices.Clone(back) // Delete clears the tail it leaves
	f.stored = slices.Delete(f.stored, i, i+len(back))
	f.releaseStored(ctx, back)
	return nil
}

// cutStored prepares a truncate to size; dataMu held. The extent
// straddling size comes back into the spool whole, before the spool is
// cut, so that a failed ftruncate leaves every byte readable; the caller
// then cuts the spool and calls dropStored.
func (f *openFile) cutStored(ctx context.Context, size int64) error {
	if i := f.storedFrom(size); i < len(f.stored) && f.stored[i].Off < size {
		return f.retreat(ctx, f.stored[i].Off, size)
	}
	return nil
}

// dropStored releases the stored extents at and past size (all of them
// start there after cutStored); dataMu held.
func (f *openFile) dropStored(ctx context.Context, size int64) {
	i := f.storedFrom(size)
	if i == len(f.stored) {
		return
	}
	gone := slices.Clone(f.stored[i:])
	f.stored = f.stored[:i:i] // a later append must not overwrite gone
	f.releaseStored(ctx, gone)
}

// readStored fills p, at file offset off, from the stored extents and the
// spool between them.
func (f *openFile) readStored(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	in := f.storedIn(off, end)
	if len(in) == 0 {
		return f.buf.readAt(p, off)
	}
	data := make([]extent, 0, len(in))
	for _, e := range in {
		if e.ID != zeroID {
			data = append(data, e)
		}
	}
	// readExtents zero-fills what its extents leave, the gaps included,
	// which the spool then fills.
	if err := f.v.r.readExtents(ctx, data, p, off, false); err != nil {
		return err
	}
	pos := off
	for _, e := range in {
		if e.Off > pos {
			if err := f.buf.readAt(p[pos-off:e.Off-off], pos); err != nil {
				return err
			}
		}
		pos = max(pos, e.Off+e.Len)
	}
	if pos < end {
		return f.buf.readAt(p[pos-off:], pos)
	}
	return nil
}

// spoolReserve is the free space spool files leave on their filesystem:
// the store's RepoReserve for the index (the spool is REPO/spool), and
// as much again for early stores to move spooled data out through the
// store's segment scratch files, which live there too.
const spoolReserve = 2 * store.RepoReserve

// spoolRoomEvery is how long a measurement of the spool's free space is
// trusted while the bytes written since stay below it.
const spoolRoomEvery = time.Second

// spoolRoom is the last measurement of the spool filesystem's free space.
type spoolRoom struct {
	mu     sync.Mutex
	at     time.Time
	left   int64     // free less spoolReserve at `at`; MaxInt64 if unknown
	since  int64     // spool bytes written since `at`
	warned time.Time // last warning in the log: writers only see ENOSPC
}

// takeSpool accounts n more bytes of spool file, or returns an error
// matching ErrNoSpace when they would eat into spoolReserve.
func (r *repo) takeSpool(n int64) error {
	sr := &r.spoolRoom
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if time.Since(sr.at) > spoolRoomEvery || sr.since+n > sr.left {
		sr.at, sr.since, sr.left = time.Now(), 0, math.MaxInt64
		var st unix.Statfs_t
		if err := unix.Statfs(r.opts.SpoolDir, &st); err == nil {
			sr.left = int64(st.Bavail)*int64(st.Bsize) - spoolReserve
		}
	}
	if sr.since+n > sr.left {
		err := fmt.Errorf("less than %d MiB left on the filesystem of %s, kept for the index: %w",
			spoolReserve>>20, r.opts.SpoolDir, ErrNoSpace)
		if time.Since(sr.warned) > time.Minute {
			sr.warned = time.Now()
			r.log.Warn("staging writes refused: free space on the repository's own filesystem (the shards may have plenty)", "err", err)
		}
		return err
	}
	sr.since += n
	return nil
}
