package layers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/strata-backup/strata/store/chunk"
)

// openFile is a staging file with buffered writes: the chunks of its
// stored content it keeps (early.go) and a spool, a memory buffer or a
// sparse file, for the rest. It exists from the first write (or size
// change) until a flush has chunked the spool into the store; then it is
// closed and forgotten, and reads go to the extent map again.
type openFile struct {
	v   *volume
	ino Ino

	// dataMu guards the spool's contents, stored, loaded and closed.
	// Writes, truncates, dirty reads and flushes hold it.
	dataMu sync.Mutex
	buf    *spoolBuf
	loaded bool // the base content is in stored (and the spool)
	// fresh: loaded without its base (truncated to zero), so none of
	// what a crash lost (Repo.loadLost) is in it any more.
	fresh  bool
	closed bool // flushed and forgotten; users must look the file up again
	// stored lists the extents whose data is in chunks the file holds a
	// reference to, sorted, anywhere in the file (early.go); the spool
	// holds the rest. sinceStore counts spool bytes written since the
	// last early store.
	stored     []extent
	sinceStore int64

	mu     sync.Mutex // guards size, mtime, ctime, dirty: short sections only
	size   int64
	mtime  time.Time
	ctime  time.Time
	dirty  bool
	marked bool // an unflushed marker may be in the index (markUnflushed)
	queued atomic.Bool
}

func (v *volume) lookupFile(ino Ino) *openFile {
	v.filesMu.Lock()
	defer v.filesMu.Unlock()
	return v.files[ino]
}

// openFileFor returns ino's open file with dataMu held and its base loaded,
// creating it if needed. With noBase the caller is about to truncate it to
// zero, so the base is not taken over.
func (v *volume) openFileFor(ctx context.Context, ino Ino, noBase bool) (*openFile, error) {
	if v.removed.Load() {
		return nil, fmt.Errorf("volume %s: %w", v.rec.Name, ErrUnknownVolume)
	}
	for {
		v.filesMu.Lock()
		f := v.files[ino]
		if f == nil {
			f = &openFile{v: v, ino: ino}
			v.files[ino] = f
		}
		v.filesMu.Unlock()
		f.dataMu.Lock()
		if f.closed {
			f.dataMu.Unlock()
			continue
		}
		if !f.loaded {
			if err := f.load(ctx, noBase); err != nil {
				f.forget()
				f.dataMu.Unlock()
				return nil, err
			}
		}
		return f, nil
	}
}

// load creates the spool and takes over the file's stored content: one
// reference per chunk of its extent map, which become stored extents
// (early.go); nothing is read.
func (f *openFile) load(ctx context.Context, noBase bool) error {
	v := f.v
	var n inode
	var es []extent
	err := v.stagingView(func(rd *rtx) error {
		var err error
		seq := v.seq.Load()
		if n, _, err = v.getInode(rd, f.ino, seq); err != nil {
			return err
		}
		if !isReg(n.Mode) {
			if isDir(n.Mode) {
				return ErrIsDir
			}
			return ErrInvalid
		}
		if !noBase && n.Size > 0 {
			es, _, err = v.getExtents(rd, f.ino, seq)
		}
		return err
	})
	if err != nil {
		return err
	}
	if f.buf == nil {
		f.buf = v.r.newSpoolBuf(v.rec.ID + "." + strconv.FormatUint(uint64(f.ino), 10))
	}
	size := n.Size
	if noBase {
		size = 0
	}
	keep := make([]extent, 0, len(es))
	for _, e := range es {
		if e.Off >= size {
			break
		}
		if e.Off+e.Len <= size {
			keep = append(keep, e)
			continue
		}
		// An extent straddling the size, which no flush writes: the part
		// below it is copied, as a truncate would.
		data, err := v.r.getChunk(ctx, e.ID)
		if err != nil {
			return err
		}
		if _, err := f.buf.writeAt(data[:min(int64(len(data)), size-e.Off)], e.Off); err != nil {
			return err
		}
	}
	if err := f.buf.truncate(size); err != nil {
		return err
	}
	if len(keep) > 0 {
		if err := v.r.cs.Retain(ctx, extentIDs(keep)); err != nil {
			return storeErr(fmt.Sprintf("keep the %d chunks of file %d", len(keep), f.ino), err)
		}
		f.stored = keep
	}
	f.mu.Lock()
	f.size, f.mtime, f.ctime = size, n.Mtime, n.Ctime
	if noBase && n.Size != 0 {
		// Truncating a non-empty file to zero changes it.
		now := v.r.now()
		f.mtime, f.ctime, f.dirty = now, now, true
	}
	f.mu.Unlock()
	f.loaded, f.fresh = true, noBase
	return nil
}

func spoolErr(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%s: %w", op, ErrNoSpace)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// storeErr wraps an error of the chunk store or the index; a full disk
// (the store's errors match syscall.ENOSPC) also matches ErrNoSpace.
func storeErr(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%s: %w: %w", op, ErrNoSpace, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// forget closes the spool and drops the file from its volume, releasing
// the stored extents no extent map took over; dataMu held.
func (f *openFile) forget() {
	f.closed = true
	if len(f.stored) > 0 {
		f.releaseStored(context.Background(), f.stored)
		f.stored = nil
	}
	if f.buf != nil {
		f.buf.close()
		f.buf = nil
	}
	f.v.filesMu.Lock()
	if f.v.files[f.ino] == f {
		delete(f.v.files, f.ino)
	}
	f.v.filesMu.Unlock()
}

func (f *openFile) overlay(a *Attr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mtime.IsZero() {
		return // not loaded yet: the record is current
	}
	a.Size, a.Mtime, a.Ctime = f.size, f.mtime, f.ctime
	a.Holes = 0 // not known until the flush
}

// writeAt writes into the spool; dataMu held. A file whose spool grew by
// Options.EarlyStore, or whose spool's filesystem is full, stores its data
// so far first (early.go).
func (f *openFile) writeAt(ctx context.Context, p []byte, off int64, now time.Time) (int, error) {
	// Store first, then retreat: a store can cover [off, end) with
	// stored extents (a write into the middle of what the spool holds),
	// and bytes written under one would be lost to every read and to the
	// flush.
	end := off + int64(len(p))
	if f.sinceStore >= f.v.r.opts.EarlyStore {
		if _, err := f.storeEarly(ctx); err != nil {
			return 0, err
		}
	}
	err := f.retreat(ctx, off, end)
	if errors.Is(err, ErrNoSpace) {
		// Taking back a chunk needs spool room too (up to the
		// chunker's maximum): make some, as for the write below.
		if moved, serr := f.storeEarly(ctx); serr != nil {
			return 0, serr
		} else if moved {
			err = f.retreat(ctx, off, end)
		}
	}
	if err != nil {
		return 0, err
	}
	n, err := f.buf.writeAt(p, off)
	if errors.Is(err, ErrNoSpace) { // the spool's filesystem is short
		if moved, serr := f.storeEarly(ctx); serr != nil {
			return 0, serr
		} else if moved {
			// Appends lie past the held-back chunk, so this is a no-op
			// for them; a write into the middle takes its part back.
			if err := f.retreat(ctx, off, end); err != nil {
				return 0, err
			}
			n, err = f.buf.writeAt(p, off)
		}
	}
	f.sinceStore += int64(n)
	f.mu.Lock()
	if end := off + int64(n); end > f.size {
		f.size = end
	}
	if n > 0 {
		f.mtime, f.ctime, f.dirty = now, now, true
	}
	f.mu.Unlock()
	return n, err
}

// truncate sets the size; dataMu held. Stored extents past it go; one
// that straddles it comes back into the spool up to it.
func (f *openFile) truncate(ctx context.Context, size int64, now time.Time) error {
	if err := f.cutStored(ctx, size); err != nil {
		return err
	}
	if err := f.buf.truncate(size); err != nil {
		return err
	}
	f.dropStored(ctx, size)
	f.mu.Lock()
	f.size, f.mtime, f.ctime, f.dirty = size, now, now, true
	f.mu.Unlock()
	return nil
}

// readAt reads an open file from its stored extents and spool. ok is
// false when the file was flushed meanwhile and the caller must read the
// stored version.
func (f *openFile) readAt(ctx context.Context, p []byte, off int64) (int, bool, error) {
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	if f.closed || !f.loaded {
		return 0, false, nil
	}
	f.mu.Lock()
	size := f.size
	f.mu.Unlock()
	if off >= size {
		return 0, true, nil
	}
	if rest := size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if err := f.readStored(ctx, p, off); err != nil {
		return 0, true, err
	}
	return len(p), true, nil
}

// extents lists an open file's data and holes: stored extents and the
// spool's data runs between them are data, the rest holes.
func (f *openFile) extents(off, length int64) ([]Extent, bool, error) {
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	if f.closed || !f.loaded {
		return nil, false, nil
	}
	f.mu.Lock()
	end := min(off+length, f.size)
	f.mu.Unlock()
	if off >= end {
		return nil, true, nil
	}
	var runs []extent
	if err := f.spoolRuns(off, end, func(o, l int64) error {
		runs = append(runs, extent{Off: o, Len: l})
		return nil
	}); err != nil {
		return nil, true, err
	}
	var out []Extent
	add := func(o, l int64, hole bool) {
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole && out[k].Off+out[k].Len == o {
			out[k].Len += l
			return
		}
		out = append(out, Extent{Off: o, Len: l, Hole: hole})
	}
	pos := off
	for _, e := range mergeExtents(f.storedIn(off, end), runs) {
		o, stop := max(e.Off, pos), min(e.Off+e.Len, end)
		if o > pos {
			add(pos, o-pos, true)
		}
		add(o, stop-o, false)
		pos = stop
	}
	if pos < end {
		add(pos, end-pos, true)
	}
	return out, true, nil
}

// flush chunks the spool into the store, writes the extent map and the
// buffered attributes, and forgets the file; dataMu held.
func (f *openFile) flush(ctx context.Context) error {
	if f.closed {
		return nil
	}
	f.mu.Lock()
	dirty, size := f.dirty, f.size
	f.mu.Unlock()
	if !dirty {
		f.forget()
		return nil
	}
	v := f.v
	var es []extent
	put := func(data []byte, off int64) error {
		if chunk.IsZero(data) {
			return nil
		}
		id, added, err := v.r.cs.Put(ctx, chunk.KindData, data)
		if err != nil {
			return storeErr("store chunk", err)
		}
		if added {
			v.added.Add(int64(len(data)))
		}
		es = append(es, extent{Off: off, Len: int64(len(data)), ID: id})
		return nil
	}
	// Written bytes count as data even when they are zeros and so not
	// stored: a filesystem allocates them, and st_blocks must not change
	// when a flush finds them zero. Holes are what was never written.
	// The spool's runs lie between stored extents, so chunking starts
	// and ends at the boundaries of the chunks kept: untouched parts of
	// a file rewritten in place keep their chunks.
	written := f.storedLen()
	err := f.spoolRuns(0, size, func(o, l int64) error {
		written += l
		return v.r.split.split(f.buf.section(o, l), o, l, put)
	})
	if err == nil {
		all := mergeExtents(f.storedData(), es)
		err = v.commitFile(ctx, f, all, size, max(size-written, 0))
		if err == nil {
			f.stored = nil // the extent map holds their references now
		}
	}
	if err != nil {
		if len(es) > 0 {
			if rerr := v.r.cs.Release(ctx, extentIDs(es)); rerr != nil {
				v.r.log.Warn("release chunks of failed flush", "ino", f.ino, "err", rerr)
			}
		}
		if isNotFound(err) {
			f.forget() // deleted meanwhile
			return nil
		}
		return fmt.Errorf("flush file %d: %w", f.ino, err)
	}
	f.forget()
	return nil
}

// commitFile writes a flushed file's extent map and attributes into the
// staging layer, releasing the chunks of an extent map that only the
// staging layer held.
func (v *volume) commitFile(ctx context.Context, f *openFile, es []extent, size, holes int64) error {
	storeFlushed := false
	for {
		err := v.commitFileOnce(ctx, f, es, size, holes, storeFlushed)
		if err != errFlushFirst {
			return err
		}
		// The extent map being replaced was written by staging and may
		// have been made durable (fsync): the new chunks must be durable
		// before it goes, or a crash would leave neither.
		if err := v.r.cs.Flush(ctx); err != nil {
			return storeErr("flush store", err)
		}
		storeFlushed = true
	}
}

// errFlushFirst asks commitFile to flush the store before replacing a
// staging extent map.
var errFlushFirst = errors.New("flush the store first")

func (v *volume) commitFileOnce(ctx context.Context, f *openFile, es []extent, size, holes int64, storeFlushed bool) error {
	return v.mutateLocked(func(m *mutation) error {
		n, err := m.inode(f.ino)
		if err != nil {
			return err
		}
		old, oseq, err := v.getExtents(m.rd, f.ino, m.seq)
		if err != nil {
			return err
		}
		if oseq == m.seq {
			if len(old) > 0 && len(es) > 0 && !storeFlushed {
				return errFlushFirst
			}
			if release := extentIDs(old); len(release) > 0 {
				// Only once the new map is in the index: a crash before
				// must not find the old map's chunks gone.
				m.flushed = append(m.flushed, func() {
					if err := v.r.cs.Release(context.Background(), release); err != nil {
						v.r.log.Warn("release replaced chunks", "ino", f.ino, "err", err)
					}
				})
			}
		}
		n.Holes = holes
		f.mu.Lock()
		n.Size, n.Mtime, n.Ctime = size, f.mtime, f.ctime
		marked := f.marked
		f.mu.Unlock()
		if err := m.put(rkIno(recExtents, uint64(f.ino)), encodeExtents(es)); err != nil {
			return err
		}
		// The data is recorded: a crash from here on loses at most
		// chunks the store had not made durable, which Open finds.
		if marked {
			m.delKey(unflushedKey(v.id, f.ino))
		}
		// A file a crash left with holes for lost data is whole again
		// once rewritten from scratch or left without holes; a write of
		// part of it is not enough.
		if f.fresh || holes == 0 {
			m.forgetLost(f.ino)
		}
		// Mutations from now until the file is forgotten must not mark
		// it unflushed again.
		m.applied = append(m.applied, func() {
			f.mu.Lock()
			f.dirty, f.marked = false, false
			f.mu.Unlock()
		})
		return m.put(rkIno(recAttr, uint64(f.ino)), n.encode())
	})
}

// flushAll flushes every dirty file of the volume. Its error names the
// first file that failed by path, for the user who must act on it.
func (v *volume) flushAll(ctx context.Context) error { return v.flushFiles(ctx, false) }

// flushFiles is flushAll, or with closedOnly only for the files no handle
// holds (the idle sync, unsaved.go). A file still open is left alone
// there: once flushed it is forgotten, and the writer's next write would
// load it again, reading its extent map and taking a reference per chunk
// (for a large file written for minutes, again at every sync), after the
// flush rewrote that map whole. Staging then stays marked unsaved.
func (v *volume) flushFiles(ctx context.Context, closedOnly bool) error {
	v.filesMu.Lock()
	fs := make([]*openFile, 0, len(v.files))
	for _, f := range v.files {
		fs = append(fs, f)
	}
	v.filesMu.Unlock()
	var first error
	for _, f := range fs {
		if closedOnly {
			v.mu.Lock()
			held := v.holds[f.ino] > 0
			v.mu.Unlock()
			if held {
				continue
			}
		}
		f.dataMu.Lock()
		err := f.flush(ctx)
		f.dataMu.Unlock()
		if err != nil && first == nil {
			first = fmt.Errorf("%s: %w", v.pathOf(ctx, f.ino, v.seq.Load()), err)
		}
	}
	return first
}

// enqueue hands a file to the flush workers; it blocks while the queue is
// full, which bounds the spool files waiting to be chunked.
func (r *Repo) enqueue(ctx context.Context, f *openFile) error {
	if f.queued.Swap(true) {
		return nil
	}
	select {
	case r.jobs <- f:
		return nil
	case <-r.done:
		f.queued.Store(false)
		return nil // Close flushes it
	case <-ctx.Done():
		f.queued.Store(false)
		return ctx.Err()
	}
}

func (r *Repo) flushWorker() {
	defer r.workers.Done()
	ctx := context.Background()
	for {
		var f *openFile
		select {
		case f = <-r.jobs:
		case <-r.done:
			return
		}
		f.queued.Store(false)
		f.dataMu.Lock()
		err := f.flush(ctx)
		f.dataMu.Unlock()
		if err != nil {
			// The file stays dirty: the next Sync, FlushFile or Commit
			// retries and reports the error to someone who can act.
			r.log.Warn("background flush", "volume", f.v.rec.Name, "ino", f.ino, "err", err)
			if errors.Is(err, ErrNoSpace) {
				r.storeFull.Store(r.now().UnixNano())
			}
		} else {
			r.storeFull.Store(0)
		}
	}
}

// storeFullFor is how long writers are refused after a background flush
// ran out of space; after it one write is let through to try again.
const storeFullFor = 5 * time.Second

// checkSpace returns ErrNoSpace while the store was recently found full.
func (r *Repo) checkSpace(op string) error {
	t := r.storeFull.Load()
	if t != 0 && r.now().Sub(time.Unix(0, t)) < storeFullFor {
		return fmt.Errorf("%s: %w (a background flush found the shard filesystems full; free space, e.g. strata prune)", op, ErrNoSpace)
	}
	return nil
}
