package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// dirHandle is the cursor of one open directory. Directory offsets count
// entries: "." is offset 0, ".." 1, then the names in order. Only the
// resume point (offset and last name) and the names of the last reply are
// kept, so memory does not grow with the directory: a 100,000-entry
// directory streams through Tree.ReadDir's `after` cursor.
type dirHandle struct {
	ino layers.Ino
	oi  *openInode // fstat after rmdir or rename over it still answers

	mu     sync.Mutex        // guards the fields below
	off    uint64            // offset of the next entry to return
	after  string            // name at off-1 ("" before the first name)
	recent map[uint64]string // offsets of the last reply -> the name before them
}

// readdirBatch is how many entries one Tree.ReadDir call fetches; a 4 KiB
// READDIR reply holds ~100 short names, a READDIRPLUS reply ~25.
const readdirBatch = 128

// readdirPlusBatch bounds a READDIRPLUS batch: a 32 KiB reply holds ~200
// entries with attributes.
const readdirPlusBatch = 256

func (f *treeFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ino := f.ino(in.NodeId)
	h := &dirHandle{ino: ino}
	if f.st != nil {
		// Staging: remember the attributes for fstat after rmdir (see
		// openInode). Read-only views skip the lookup.
		a, err := f.tree.GetAttr(newCtx(cancel), ino)
		if err != nil {
			return f.status("opendir", err)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return fuse.ENOTDIR
		}
		h.oi = f.open.open(a)
	}
	out.Fh = f.dirs.add(h)
	if f.cache.keepCache {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR
	}
	return fuse.OK
}

func (f *treeFS) ReleaseDir(in *fuse.ReleaseIn) {
	if h, ok := f.dirs.get(in.Fh); ok {
		f.dirs.remove(in.Fh)
		if h.oi != nil {
			f.open.release(h.oi)
		}
	}
}

func (f *treeFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if f.st == nil {
		return fuse.OK
	}
	return f.status("fsyncdir", f.st.Sync(newCtx(cancel)))
}

// ReadDir and ReadDirPlus fill one page of at most a few hundred entries
// from the index, so they do not stop when the kernel interrupts them:
// stopping only turned a signal the caller got (the Go runtime's
// preemption, say) into getdents(2) failing with EINTR, which programs do
// not expect from a local filesystem.
func (f *treeFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(context.Background(), in, out, false)
}

func (f *treeFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.warm.readDirPlus(in.Size)
	if f.opts.ReadDirDelay > 0 {
		time.Sleep(f.opts.ReadDirDelay)
	}
	return f.readDir(context.Background(), in, out, true)
}

func (f *treeFS) readDir(ctx context.Context, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	h, ok := f.dirs.get(in.Fh)
	if !ok {
		return fuse.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := f.seekDir(ctx, h, in.Offset); err != nil {
		return f.status("readdir", err)
	}
	recent := make(map[uint64]string, 32)
	add := func(e fuse.DirEntry, a *layers.Attr) bool {
		e.Off = h.off + 1
		if !plus {
			return out.AddDirEntry(e)
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		if a != nil {
			f.fillEntry(*a, eo)
		}
		return true
	}
	// "." and "..": their ino only shows in d_ino; the kernel resolves
	// them itself.
	for h.off < 2 {
		name := "."
		if h.off == 1 {
			name = ".."
		}
		if !add(fuse.DirEntry{Name: name, Ino: f.node(h.ino), Mode: syscall.S_IFDIR}, nil) {
			h.recent = recent
			return fuse.OK
		}
		h.off++
		recent[h.off] = ""
	}
	n := readdirBatch
	if plus {
		// Attributes are read for the whole batch, so fetch about what
		// fits: entries of 8-byte names.
		n = max(1, min(readdirPlusBatch, int(in.Size)/direntPlusSize(8)))
	}
	for {
		batch := make([]layers.Dirent, 0, n)
		err := f.tree.ReadDir(ctx, h.ino, h.after, func(d layers.Dirent) bool {
			batch = append(batch, d)
			return len(batch) < n
		})
		if err != nil {
			return f.status("readdir", err)
		}
		// Attributes are read outside the ReadDir callback so layers
		// never has a lookup nested in an iteration, and for the whole
		// batch at once (one index pass instead of a lookup per entry).
		// An entry removed meanwhile has none: NodeId stays 0 and the
		// kernel just does not cache it.
		attrs := make([]*layers.Attr, len(batch))
		if plus {
			if err := f.batchAttrs(ctx, batch, attrs); err != nil {
				return f.status("readdirplus", err)
			}
		}
		for i, d := range batch {
			if !add(fuse.DirEntry{Name: d.Name, Ino: f.node(d.Ino), Mode: d.Mode}, attrs[i]) {
				h.recent = recent
				return fuse.OK
			}
			h.off++
			h.after = d.Name
			recent[h.off] = d.Name
		}
		if len(batch) < n {
			h.recent = recent
			return fuse.OK
		}
	}
}

// batchAttrs sets attrs[i] to the attributes of batch[i], where it has
// any, and queues small files for the prefetcher in name order, the order
// readers (tar, cp -r) open them.
func (f *treeFS) batchAttrs(ctx context.Context, batch []layers.Dirent, attrs []*layers.Attr) error {
	inos := make([]layers.Ino, len(batch))
	for i, d := range batch {
		inos[i] = d.Ino
	}
	err := f.tree.GetAttrs(ctx, inos, func(i int, a layers.Attr) { attrs[i] = &a })
	if err != nil || f.pre == nil {
		return err
	}
	f.pre.addAll(ctx, attrs)
	return nil
}

// seekDir moves the cursor to off. Sequential reads continue where the last
// reply ended; a reply the kernel consumed partially resumes from the
// names of that reply; any other offset (seekdir) rescans from the start.
func (f *treeFS) seekDir(ctx context.Context, h *dirHandle, off uint64) error {
	if off == h.off {
		return nil
	}
	if name, ok := h.recent[off]; ok {
		h.off, h.after = off, name
		return nil
	}
	h.off, h.after = 0, ""
	if off <= 2 {
		h.off = off
		return nil
	}
	h.off = 2
	for h.off < off {
		n := 0
		err := f.tree.ReadDir(ctx, h.ino, h.after, func(d layers.Dirent) bool {
			h.off++
			h.after = d.Name
			n++
			return h.off < off
		})
		if err != nil {
			return err
		}
		if n == 0 {
			break // past the end: the next read returns nothing
		}
	}
	return nil
}
