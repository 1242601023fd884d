package fs

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// viewBits is how many low bits of a FUSE node id carry the layers inode
// number; the bits above select a view (browse mounts hold many revisions
// in one mount). Single-tree mounts use view 0, so node id == layers.Ino.
const viewBits = 40

const inoMask = 1<<viewBits - 1

// cacheTimes are the kernel's attribute/entry cache lifetimes.
type cacheTimes struct {
	entry, attr, negative time.Duration
	keepCache             bool // FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR
}

// treeFS serves an fs volume view through go-fuse's raw API: node ids are
// layers inode numbers (plus a view offset in browse mounts), so no second
// in-memory tree exists. With st nil it is read-only.
type treeFS struct {
	fuse.RawFileSystem // defaults (ENOSYS) for what we do not implement

	tree  *layers.Tree
	st    *layers.Staging // nil: read-only
	base  uint64          // view << viewBits
	cache cacheTimes
	opts  Options
	errs  *errLog
	dirs  handles[*dirHandle]
	files handles[*fileHandle]
	open  openInodes
	pre   *prefetcher  // nil: no read-ahead of small files
	warm  *warmer      // nil: no listing ahead of lookups (staging only)
	srv   *fuse.Server // set by Init, before the first request
}

// fileHandle is an open file. Reads and writes go by inode.
type fileHandle struct {
	oi       *openInode
	writable bool
}

// openInode remembers the last attributes of an open inode so fstat(2) on
// a file unlinked while open still answers (nlink 0) after layers dropped
// the inode, as POSIX wants.
type openInode struct {
	ino  layers.Ino
	refs int         // guarded by openInodes.mu
	attr layers.Attr // guarded by openInodes.mu
	// privsClear: a write has nothing to drop (treeFS.killPrivs), as of
	// privsGen, which every change that could add file capabilities or
	// set-ID bits moves on. Guarded by openInodes.mu.
	privsClear bool
	privsGen   uint64
}

// openInodes tracks the inodes with open file handles.
type openInodes struct {
	mu sync.Mutex // guards m and the openInode fields
	m  map[layers.Ino]*openInode
}

func (o *openInodes) open(a layers.Attr) *openInode {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = make(map[layers.Ino]*openInode)
	}
	oi := o.m[a.Ino]
	if oi == nil {
		oi = &openInode{ino: a.Ino}
		o.m[a.Ino] = oi
	}
	oi.refs++
	oi.attr = a
	return oi
}

// create is open for an inode Create just made: it has no file
// capabilities yet, so without set-ID bits its writes drop nothing.
func (o *openInodes) create(a layers.Attr) *openInode {
	oi := o.open(a)
	o.mu.Lock()
	defer o.mu.Unlock()
	oi.privsClear = a.Mode&(syscall.S_ISUID|syscall.S_ISGID) == 0
	return oi
}

// privsToCheck reports whether a write to oi must look for privileges to
// drop, and the generation to hand privsDropped after looking.
func (o *openInodes) privsToCheck(oi *openInode) (bool, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !oi.privsClear, oi.privsGen
}

// privsDropped records that oi had nothing left to drop as of gen.
func (o *openInodes) privsDropped(oi *openInode, gen uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oi.privsGen == gen {
		oi.privsClear = true
	}
}

// privsMayChange records that ino (if open) may have gained file
// capabilities or set-ID bits.
func (o *openInodes) privsMayChange(ino layers.Ino) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oi := o.m[ino]; oi != nil {
		oi.privsClear = false
		oi.privsGen++
	}
}

func (o *openInodes) release(oi *openInode) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oi.refs--; oi.refs == 0 {
		delete(o.m, oi.ino)
	}
}

// seen records fresh attributes of ino if it is open.
func (o *openInodes) seen(a layers.Attr) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oi := o.m[a.Ino]; oi != nil {
		oi.attr = a
	}
}

// orphan returns the last attributes of an open inode layers no longer has.
func (o *openInodes) orphan(ino layers.Ino) (layers.Attr, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	oi := o.m[ino]
	if oi == nil {
		return layers.Attr{}, false
	}
	a := oi.attr
	a.Nlink = 0
	return a, true
}

func newTreeFS(tree *layers.Tree, st *layers.Staging, base uint64, cache cacheTimes, opts Options, errs *errLog) *treeFS {
	return &treeFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		tree:          tree,
		st:            st,
		base:          base,
		cache:         cache,
		opts:          opts,
		errs:          errs,
	}
}

// newRevisionFS is a read-only view of a revision that reads small files
// ahead into the kernel's page cache (prefetcher), stopped by f.pre.close.
// srv is the FUSE server of a view inside a browse mount; a view mounted
// alone gets it from Init.
func newRevisionFS(tree *layers.Tree, base uint64, srv *fuse.Server, opts Options, errs *errLog) *treeFS {
	f := newTreeFS(tree, nil, base, revisionCache, opts, errs)
	f.srv = srv
	f.pre = newPrefetcher(tree, f.storeCache)
	return f
}

func (f *treeFS) String() string { return "strata" }

func (f *treeFS) ino(node uint64) layers.Ino { return layers.Ino(node & inoMask) }
func (f *treeFS) node(ino layers.Ino) uint64 { return f.base | uint64(ino) }

func (f *treeFS) status(op string, err error) fuse.Status { return f.errs.status(op, err) }

func (f *treeFS) fillAttr(a layers.Attr, out *fuse.Attr) {
	fillAttr(a, f.node(a.Ino), out)
}

func fillAttr(a layers.Attr, node uint64, out *fuse.Attr) {
	out.Ino = node
	out.Size = uint64(a.Size)
	out.Blocks = (uint64(max(a.Size-a.Holes, 0)) + 511) / 512
	setTimes(out, a.Atime, a.Mtime, a.Ctime)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = uint32(a.Rdev)
	// st_blksize steers cp's and tar's buffer sizes: match MaxWrite.
	out.Blksize = 1 << 20
}

func setTimes(out *fuse.Attr, atime, mtime, ctime time.Time) {
	ts := func(t time.Time) (uint64, uint32) {
		if t.IsZero() {
			return 0, 0
		}
		return uint64(t.Unix()), uint32(t.Nanosecond())
	}
	out.Atime, out.Atimensec = ts(atime)
	out.Mtime, out.Mtimensec = ts(mtime)
	out.Ctime, out.Ctimensec = ts(ctime)
}

func (f *treeFS) fillEntry(a layers.Attr, out *fuse.EntryOut) {
	out.NodeId = f.node(a.Ino)
	out.Generation = entryGeneration
	out.SetEntryTimeout(f.cache.entry)
	out.SetAttrTimeout(f.cache.attr)
	f.fillAttr(a, &out.Attr)
}

func (f *treeFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.tree.Lookup(newCtx(cancel), f.ino(h.NodeId), name)
	f.warm.lookup(h.NodeId, name, err == nil, h.Caller.Pid)
	if err != nil {
		if errors.Is(err, layers.ErrNotFound) && f.cache.negative > 0 {
			// NodeId 0 with a timeout is a cacheable negative entry.
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(f.cache.negative)
			return fuse.OK
		}
		return f.status("lookup", err)
	}
	f.fillEntry(a, out)
	return fuse.OK
}

// Forget needs nothing but telling the warmer: layers holds all inode
// state and ids are stable.
func (f *treeFS) Forget(nodeid, nlookup uint64) { f.warm.forget(nodeid) }

func (f *treeFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ino := f.ino(in.NodeId)
	a, err := f.tree.GetAttr(newCtx(cancel), ino)
	if err == nil {
		f.open.seen(a)
	} else {
		var ok bool
		if a, ok = f.open.orphan(ino); !ok || !errors.Is(err, layers.ErrNotFound) {
			return f.status("getattr", err)
		}
	}
	out.SetTimeout(f.cache.attr)
	f.fillAttr(a, &out.Attr)
	return fuse.OK
}

// writers lists the inodes with a writable handle open, each once, in
// inode order.
func (f *treeFS) writers() []layers.Ino {
	var out []layers.Ino
	f.files.each(func(h *fileHandle) {
		if h.writable && h.oi != nil {
			out = append(out, h.oi.ino)
		}
	})
	slices.Sort(out)
	return slices.Compact(out)
}

func (f *treeFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	target, err := f.tree.Readlink(newCtx(cancel), f.ino(h.NodeId))
	if err != nil {
		return nil, f.status("readlink", err)
	}
	return []byte(target), fuse.OK
}

func (f *treeFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	writable := in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if f.st == nil {
		if writable {
			return fuse.Status(syscall.EROFS)
		}
		// Read-only views need no handles: ENOSYS makes the kernel stop
		// sending OPEN and RELEASE for this mount (zero-message open, with
		// keep_cache as its default), two round trips less per file.
		return fuse.ENOSYS
	}
	a, err := f.tree.GetAttr(newCtx(cancel), f.ino(in.NodeId))
	if err != nil {
		return f.status("open", err)
	}
	// An unlinked file stays readable and writable until its last
	// handle goes (Release unholds).
	f.st.Hold(a.Ino)
	out.Fh = f.files.add(&fileHandle{oi: f.open.open(a), writable: writable})
	if writable {
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO // see treeFS.Create
	}
	if !writable {
		// Nothing to do on close of a read-only handle: skip the FLUSH
		// round trip.
		out.OpenFlags |= fuse.FOPEN_NOFLUSH
	}
	return fuse.OK
}

func (f *treeFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, err := f.tree.ReadAt(newCtx(cancel), f.ino(in.NodeId), buf[:in.Size], int64(in.Offset))
	if err != nil && err != io.EOF {
		return nil, f.status("read", err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the extent map so sparse-aware
// copies (cp, tar -S, rsync reading the mount) skip holes.
func (f *treeFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	const seekData, seekHole = 3, 4
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.ENOSYS // the kernel handles SEEK_SET/CUR/END itself
	}
	ctx := newCtx(cancel)
	ino := f.ino(in.NodeId)
	a, err := f.tree.GetAttr(ctx, ino)
	if err != nil {
		return f.status("lseek", err)
	}
	off, err := seekExtents(ctx, a.Size, int64(in.Offset), in.Whence == seekData,
		func(ctx context.Context, off, n int64) ([]layers.Extent, error) {
			return f.tree.Extents(ctx, ino, off, n)
		})
	if err == errENXIO {
		return fuse.Status(syscall.ENXIO)
	}
	if err != nil {
		return f.status("lseek", err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

// errENXIO is seekExtents' "no data/hole past here", answered as ENXIO.
var errENXIO = errors.New("seek past end")

// seekExtents implements SEEK_DATA (data=true) and SEEK_HOLE over an extent
// query. Past the end is ENXIO; the end of file counts as a hole.
func seekExtents(ctx context.Context, size, off int64, data bool, extents func(context.Context, int64, int64) ([]layers.Extent, error)) (int64, error) {
	if off < 0 || off >= size {
		return 0, errENXIO
	}
	exts, err := extents(ctx, off, size-off)
	if err != nil {
		return 0, err
	}
	for _, e := range exts {
		if e.Len <= 0 || e.Off+e.Len <= off {
			continue
		}
		if e.Hole != data {
			return max(e.Off, off), nil
		}
	}
	if data {
		return 0, errENXIO
	}
	return size, nil
}

func (f *treeFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	h, ok := f.files.get(in.Fh)
	if !ok {
		return
	}
	f.files.remove(in.Fh)
	if h.oi != nil {
		f.open.release(h.oi)
	}
	if f.st != nil {
		// The last handle of an unlinked file drops it (and its
		// buffered writes, which FlushFile then has none of).
		if err := f.st.Unhold(newCtx(cancel), f.ino(in.NodeId)); err != nil {
			f.status("release", err)
		}
	}
	if h.writable && f.st != nil {
		// flush already started chunking; this catches handles whose
		// last flush failed or raced with another writer.
		if err := f.st.FlushFile(newCtx(cancel), f.ino(in.NodeId), false); err != nil {
			f.status("release", err)
		}
	}
}

func (f *treeFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	v, err := f.tree.GetXattr(newCtx(cancel), f.ino(h.NodeId), name)
	if err != nil {
		return 0, f.status("getxattr", err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (f *treeFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	names, err := f.tree.ListXattr(newCtx(cancel), f.ino(h.NodeId))
	if err != nil {
		return 0, f.status("listxattr", err)
	}
	n := 0
	for _, s := range names {
		n += len(s) + 1
	}
	if len(dest) < n {
		return uint32(n), fuse.ERANGE
	}
	p := dest[:0]
	for _, s := range names {
		p = append(p, s...)
		p = append(p, 0)
	}
	return uint32(n), fuse.OK
}

func (f *treeFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return statFS(newCtx(cancel), f.opts.Repo, f.errs, out)
}

// statFS fills statfs(2) from the repository's capacity.
func statFS(ctx context.Context, repo *layers.Repo, errs *errLog, out *fuse.StatfsOut) fuse.Status {
	const bsize = 4096
	*out = fuse.StatfsOut{Bsize: bsize, Frsize: bsize, NameLen: 255}
	if repo == nil {
		const unknown = 1 << 40 // 4 PiB of 4 KiB blocks
		out.Blocks, out.Bfree, out.Bavail = unknown, unknown, unknown
		out.Files, out.Ffree = 1<<40, 1<<40
		return fuse.OK
	}
	s, err := repo.StatFS(ctx)
	if err != nil {
		return errs.status("statfs", err)
	}
	out.Blocks = s.TotalBytes / bsize
	out.Bfree = s.FreeBytes / bsize
	out.Bavail = s.AvailBytes / bsize
	out.Files, out.Ffree = s.Files, s.FreeFiles
	return fuse.OK
}
