package layers

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
)

// A staging file's spool holds its whole image until the flush, so a file
// larger than the free space of the spool's filesystem (REPO/spool) could
// not be written at all: rsync of a 30 GiB file needed 30 GiB there, even
// with the shards on another disk. So once a file has gained
// Options.EarlyStore bytes of spool since its last store, or the spool's
// filesystem is full, the data it holds from cut on goes to the store
// now, up to the last chunk boundary, and is punched out of the spool.
// The chunk after that boundary stays: more data appended to it moves the
// boundary, and leaving it keeps the chunks the same as those of a flush
// of the whole file (dedup does not change).
//
// The early chunks cover [0, cut); nothing in the index refers to them
// until the flush writes the file's extent map. Reads below cut go to
// them; a write or truncate below cut first moves the chunks from that
// point on back into the spool (retreat), which is the old whole-image
// behaviour for the part it touches.

// defaultEarlyStore is Options.EarlyStore's default: a file writing past it
// stores its data so far. Below it nothing changes (the benchmark corpus
// has no file this large); above, a write waits for the chunking of this
// much data, once per this much written.
const defaultEarlyStore = 256 << 20

// zeroID marks an early extent of written zeros: counted as written (see
// flush) but not stored. It never leaves this file: earlyData filters it.
var zeroID chunk.ID

// earlyData returns the early extents that hold stored chunks.
func (f *openFile) earlyData() []extent {
	out := make([]extent, 0, len(f.early))
	for _, e := range f.early {
		if e.ID != zeroID {
			out = append(out, e)
		}
	}
	return out
}

// earlyWritten is how many bytes below cut were written (data or zeros).
func (f *openFile) earlyWritten() int64 {
	var n int64
	for _, e := range f.early {
		n += e.Len
	}
	return n
}

// releaseEarly drops the store references of early extents; used when
// they will never be part of an extent map.
func (f *openFile) releaseEarly(ctx context.Context, es []extent) {
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
		f.v.r.log.Warn("release early-stored chunks", "ino", f.ino, "err", err)
	}
}

// storeEarly puts the spool's data from cut up to the last chunk boundary
// into the store and punches it out of the spool; dataMu held. It reports
// whether cut moved.
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
	if err := f.buf.dataRuns(f.cut, size, func(o, l int64) error {
		runs = append(runs, run{o, l})
		return nil
	}); err != nil {
		return false, err
	}
	var es []extent
	newCut := f.cut
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
			f.releaseEarly(ctx, es)
			return false, err
		}
		newCut = next
	}
	if newCut <= f.cut {
		return false, nil
	}
	// Punching only frees space: reads and flushes below cut never look
	// at the spool, so a filesystem without hole punching still works.
	if err := f.buf.punch(f.cut, newCut-f.cut); err != nil {
		f.v.r.log.Debug("punch spool", "ino", f.ino, "err", err)
	}
	f.early = append(f.early, es...)
	f.cut = newCut
	return true, nil
}

// retreat makes the bytes from x on writable again by moving the early
// extents that end after x back into the spool; dataMu held. Bytes at and
// past limit are about to be cut off (a truncate), so they are not copied.
// On error nothing changed: reads below cut still use the early extents.
func (f *openFile) retreat(ctx context.Context, x, limit int64) error {
	if x >= f.cut {
		return nil
	}
	back := f.earlyFrom(x)
	i := len(f.early) - len(back)
	newCut := x
	if len(back) > 0 {
		newCut = min(newCut, back[0].Off)
	}
	for _, e := range back {
		if e.Off >= limit {
			break
		}
		n := min(e.Len, limit-e.Off)
		data := make([]byte, n)
		if e.ID != zeroID {
			c, err := f.v.r.getChunk(ctx, e.ID)
			if err != nil {
				return fmt.Errorf("read back early chunk: %w", err)
			}
			if int64(len(c)) != e.Len {
				return fmt.Errorf("chunk %s: length %d, extent says %d", e.ID.Short(), len(c), e.Len)
			}
			copy(data, c)
		}
		if _, err := f.buf.writeAt(data, e.Off); err != nil {
			return err
		}
	}
	f.early = f.early[:i:i] // a later append must not overwrite back
	f.cut = newCut
	f.releaseEarly(ctx, back)
	return nil
}

// earlyFrom returns the early extents that end after off: a read or a
// listing of a file being written costs a search, not a pass over every
// chunk stored so far.
func (f *openFile) earlyFrom(off int64) []extent {
	i := sort.Search(len(f.early), func(i int) bool { return f.early[i].Off+f.early[i].Len > off })
	return f.early[i:]
}

// readEarly fills p (at file offset off, all below cut) from the early
// extents.
func (f *openFile) readEarly(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	var es []extent
	for _, e := range f.earlyFrom(off) {
		if e.Off >= end {
			break
		}
		if e.ID != zeroID {
			es = append(es, e)
		}
	}
	return f.v.r.readExtents(ctx, es, p, off, false)
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
