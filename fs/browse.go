package fs

import (
	"container/list"
	"context"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// Browse layout, read-only:
//
//	/VOLUME/<UTC time>_<id8>/   one per revision: the tree, or disk.img
//	/VOLUME/tags/<tag>          symlink to the newest revision with the tag
//	/VOLUME/latest              symlink to the newest revision
//
// Node ids: view 0 holds the synthetic nodes above (root is 1); each
// revision ever looked up gets a view number v and its inodes appear as
// v<<viewBits | ino. View numbers are never reused, so a node id the
// kernel still holds always means the same revision; the opened
// layers views behind them are cached and bounded.

// RevisionDirName is the browse directory name of a revision.
func RevisionDirName(r layers.Revision) string {
	id := r.ID
	if len(id) > 8 {
		id = id[:8]
	}
	return r.Time.UTC().Format("2006-01-02T15:04:05Z") + "_" + id
}

// browseViews bounds the opened revision views (each may hold caches in
// layers); evicted ones reopen on next use.
const browseViews = 32

// browseInUse is how long after its last request a revision of a browse
// mount counts as in use, so prune defers its removal: a copy out of it
// reads on, and its files may be open (opens are zero-message, so the
// server cannot count them).
const browseInUse = 10 * time.Minute

// synthetic cache lifetime: revisions come and go (commit, prune).
var browseCache = cacheTimes{entry: time.Second, attr: time.Second}

type synthKind int

const (
	synthRoot synthKind = iota
	synthVolume
	synthTags
	synthLatest
	synthTag
)

type synthNode struct {
	kind synthKind
	vol  string
	tag  string
}

type viewKey struct{ vol, id string }

type viewInfo struct {
	viewKey
	used time.Time // when a request beneath its root last came (inUse)
	typ  layers.VolumeType
	time time.Time
}

type openView struct {
	fs fuse.RawFileSystem
	// close releases what the view holds (a block revision's disk, a
	// tree's prefetcher) once it is evicted and unused.
	close   func()
	refs    int
	evicted bool
	elem    *list.Element
}

type browseFS struct {
	fuse.RawFileSystem

	repo  *layers.Repo
	opts  Options
	errs  *errLog
	mtime time.Time
	srv   *fuse.Server // set by Init, before the first request

	mu       sync.Mutex // guards the fields below
	synthIno map[synthNode]uint64
	synth    []synthNode // synth[ino-1]
	viewNum  map[viewKey]uint64
	views    []viewInfo // views[v-1]
	open     map[uint64]*openView
	lru      *list.List // of view numbers, most recent first
}

func newBrowseFS(repo *layers.Repo, opts Options, errs *errLog) *browseFS {
	b := &browseFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		repo:          repo,
		opts:          opts,
		errs:          errs,
		mtime:         opts.Now(),
		synthIno:      make(map[synthNode]uint64),
		viewNum:       make(map[viewKey]uint64),
		open:          make(map[uint64]*openView),
		lru:           list.New(),
	}
	b.synthNode(synthNode{kind: synthRoot})
	return b
}

func (b *browseFS) String() string { return "strata" }

// synthNode returns the ino of n, allocating one on first use.
func (b *browseFS) synthNode(n synthNode) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ino, ok := b.synthIno[n]; ok {
		return ino
	}
	b.synth = append(b.synth, n)
	ino := uint64(len(b.synth))
	b.synthIno[n] = ino
	return ino
}

func (b *browseFS) synthByIno(ino uint64) (synthNode, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ino == 0 || ino > uint64(len(b.synth)) {
		return synthNode{}, false
	}
	return b.synth[ino-1], true
}

// viewFor returns the view number of revision r of volume vi.
func (b *browseFS) viewFor(vi layers.VolumeInfo, r layers.Revision) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := viewKey{vi.Name, r.ID}
	if v, ok := b.viewNum[k]; ok {
		return v
	}
	b.views = append(b.views, viewInfo{viewKey: k, typ: vi.Type, time: r.Time})
	v := uint64(len(b.views))
	b.viewNum[k] = v
	return v
}

// acquire returns the filesystem of the view that node is in, opening it
// if needed; call release when done. A request on anything beneath the
// revision's root makes the revision in use (inUse); one on the root
// itself does not: ls -l of the volume directory looks at every root.
func (b *browseFS) acquire(ctx context.Context, node uint64) (fuse.RawFileSystem, func(), fuse.Status) {
	return b.acquireView(ctx, node>>viewBits, node&inoMask != uint64(layers.RootIno))
}

// acquireView returns the filesystem of view v; use says whether the
// request makes the revision in use.
func (b *browseFS) acquireView(ctx context.Context, v uint64, use bool) (fuse.RawFileSystem, func(), fuse.Status) {
	b.mu.Lock()
	if use && v != 0 && v <= uint64(len(b.views)) {
		b.views[v-1].used = b.opts.Now()
	}
	if ov, ok := b.open[v]; ok {
		ov.refs++
		b.lru.MoveToFront(ov.elem)
		b.mu.Unlock()
		return ov.fs, func() { b.release(ov) }, fuse.OK
	}
	if v == 0 || v > uint64(len(b.views)) {
		b.mu.Unlock()
		return nil, nil, fuse.ENOENT
	}
	info := b.views[v-1]
	b.mu.Unlock()

	// Open outside the lock: it reads the store. Two racing opens of one
	// view both succeed; the loser is dropped below.
	ov := &openView{refs: 1}
	base := v << viewBits
	switch info.typ {
	case layers.TypeBlock:
		d, err := b.repo.RevisionDisk(ctx, info.vol, info.id)
		if err != nil {
			return nil, nil, b.errs.status("open revision", err)
		}
		ov.close = func() { _ = d.Close() }
		ov.fs = newDiskFS(d, base, revisionCache, info.time, b.opts, b.errs)
	default:
		t, err := b.repo.Snapshot(ctx, info.vol, info.id)
		if err != nil {
			return nil, nil, b.errs.status("open revision", err)
		}
		tfs := newRevisionFS(t, base, b.srv, b.opts, b.errs)
		ov.fs, ov.close = tfs, tfs.pre.close
	}

	b.mu.Lock()
	if cur, ok := b.open[v]; ok {
		cur.refs++
		b.lru.MoveToFront(cur.elem)
		b.mu.Unlock()
		ov.close()
		return cur.fs, func() { b.release(cur) }, fuse.OK
	}
	ov.elem = b.lru.PushFront(v)
	b.open[v] = ov
	var closing []func()
	for b.lru.Len() > browseViews {
		old := b.lru.Back()
		ov2 := b.open[old.Value.(uint64)]
		b.lru.Remove(old)
		delete(b.open, old.Value.(uint64))
		ov2.evicted = true
		if ov2.refs == 0 {
			closing = append(closing, ov2.close)
		}
	}
	b.mu.Unlock()
	for _, c := range closing {
		c()
	}
	return ov.fs, func() { b.release(ov) }, fuse.OK
}

// inUse lists the revisions a request used within window, or uses now.
func (b *browseFS) inUse(window time.Duration) []RevisionRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []RevisionRef
	now := b.opts.Now()
	for i, vi := range b.views {
		if vi.used.IsZero() {
			continue // never read beneath its root
		}
		if ov := b.open[uint64(i+1)]; now.Sub(vi.used) < window || (ov != nil && ov.refs > 0) {
			out = append(out, RevisionRef{Volume: vi.vol, ID: vi.id})
		}
	}
	return out
}

func (b *browseFS) release(ov *openView) {
	b.mu.Lock()
	ov.refs--
	closeIt := ov.evicted && ov.refs == 0
	b.mu.Unlock()
	if closeIt {
		ov.close()
	}
}

func (b *browseFS) Init(s *fuse.Server) { b.srv = s }

// closeAll closes every open view (after unmount).
func (b *browseFS) closeAll() {
	b.mu.Lock()
	open := b.open
	b.open = make(map[uint64]*openView)
	b.lru.Init()
	b.mu.Unlock()
	for _, ov := range open {
		ov.close()
	}
}

// ---- synthetic nodes ----

func (b *browseFS) revisions(ctx context.Context, vol string) ([]layers.Revision, error) {
	revs, err := b.repo.Revisions(ctx, vol)
	if err != nil {
		return nil, err
	}
	// Newest last; equal times keep the repository's order.
	sort.SliceStable(revs, func(i, j int) bool { return revs[i].Time.Before(revs[j].Time) })
	return revs, nil
}

// newest returns the newest revision, with tag if tag != "".
func newest(revs []layers.Revision, tag string) (layers.Revision, bool) {
	for i := len(revs) - 1; i >= 0; i-- {
		if tag == "" || slices.Contains(revs[i].Tags, tag) {
			return revs[i], true
		}
	}
	return layers.Revision{}, false
}

func (b *browseFS) symlinkTarget(ctx context.Context, n synthNode) (string, error) {
	revs, err := b.revisions(ctx, n.vol)
	if err != nil {
		return "", err
	}
	r, ok := newest(revs, n.tag)
	if !ok {
		return "", layers.ErrNotFound
	}
	if n.kind == synthTag {
		return "../" + RevisionDirName(r), nil
	}
	return RevisionDirName(r), nil
}

func (b *browseFS) synthAttr(ctx context.Context, ino uint64, n synthNode, out *fuse.Attr) error {
	a := layers.Attr{Ino: layers.Ino(ino), Atime: b.mtime, Mtime: b.mtime, Ctime: b.mtime, Nlink: 2, Mode: syscall.S_IFDIR | 0o555}
	if n.kind == synthLatest || n.kind == synthTag {
		target, err := b.symlinkTarget(ctx, n)
		if err != nil {
			return err
		}
		a.Mode, a.Nlink, a.Size = syscall.S_IFLNK|0o777, 1, int64(len(target))
	}
	fillAttr(a, ino, out)
	return nil
}

func (b *browseFS) synthEntry(ctx context.Context, n synthNode, out *fuse.EntryOut) fuse.Status {
	ino := b.synthNode(n)
	if err := b.synthAttr(ctx, ino, n, &out.Attr); err != nil {
		return b.errs.status("lookup", err)
	}
	out.NodeId, out.Generation = ino, 1
	out.SetEntryTimeout(browseCache.entry)
	out.SetAttrTimeout(browseCache.attr)
	return fuse.OK
}

func (b *browseFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newCtx(cancel)
	if v := h.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(ctx, h.NodeId)
		if !st.Ok() {
			return st
		}
		defer done()
		return fs.Lookup(cancel, h, name, out)
	}
	n, ok := b.synthByIno(h.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	switch n.kind {
	case synthRoot:
		if _, err := b.repo.Volume(ctx, name); err != nil {
			return b.errs.status("lookup volume", err)
		}
		return b.synthEntry(ctx, synthNode{kind: synthVolume, vol: name}, out)
	case synthVolume:
		switch name {
		case "tags":
			return b.synthEntry(ctx, synthNode{kind: synthTags, vol: n.vol}, out)
		case "latest":
			return b.synthEntry(ctx, synthNode{kind: synthLatest, vol: n.vol}, out)
		}
		vi, err := b.repo.Volume(ctx, n.vol)
		if err != nil {
			return b.errs.status("lookup", err)
		}
		revs, err := b.revisions(ctx, n.vol)
		if err != nil {
			return b.errs.status("lookup", err)
		}
		for _, r := range revs {
			if RevisionDirName(r) != name {
				continue
			}
			v := b.viewFor(vi, r)
			fs, done, st := b.acquireView(ctx, v, false)
			if !st.Ok() {
				return st
			}
			defer done()
			var ao fuse.AttrOut
			gin := fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: v<<viewBits | uint64(layers.RootIno)}}
			if st := fs.GetAttr(cancel, &gin, &ao); !st.Ok() {
				return st
			}
			out.NodeId, out.Generation, out.Attr = gin.NodeId, 1, ao.Attr
			out.SetEntryTimeout(browseCache.entry)
			out.SetAttrTimeout(revisionCache.attr)
			return fuse.OK
		}
		return fuse.ENOENT
	case synthTags:
		revs, err := b.revisions(ctx, n.vol)
		if err != nil {
			return b.errs.status("lookup", err)
		}
		if _, ok := newest(revs, name); !ok || !showableTag(name) {
			return fuse.ENOENT
		}
		return b.synthEntry(ctx, synthNode{kind: synthTag, vol: n.vol, tag: name}, out)
	}
	return fuse.ENOTDIR
}

func (b *browseFS) Forget(nodeid, nlookup uint64) {}

func (b *browseFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := newCtx(cancel)
	if v := in.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(ctx, in.NodeId)
		if !st.Ok() {
			return st
		}
		defer done()
		return fs.GetAttr(cancel, in, out)
	}
	n, ok := b.synthByIno(in.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	if err := b.synthAttr(ctx, in.NodeId, n, &out.Attr); err != nil {
		return b.errs.status("getattr", err)
	}
	out.SetTimeout(browseCache.attr)
	return fuse.OK
}

func (b *browseFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	ctx := newCtx(cancel)
	if v := h.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(ctx, h.NodeId)
		if !st.Ok() {
			return nil, st
		}
		defer done()
		return fs.Readlink(cancel, h)
	}
	n, ok := b.synthByIno(h.NodeId)
	if !ok || (n.kind != synthLatest && n.kind != synthTag) {
		return nil, fuse.EINVAL
	}
	target, err := b.symlinkTarget(ctx, n)
	if err != nil {
		return nil, b.errs.status("readlink", err)
	}
	return []byte(target), fuse.OK
}

// listing returns the entries of a synthetic directory after "." and "..".
func (b *browseFS) listing(ctx context.Context, n synthNode) ([]fuse.DirEntry, error) {
	var ents []fuse.DirEntry
	switch n.kind {
	case synthRoot:
		vols, err := b.repo.Volumes(ctx)
		if err != nil {
			return nil, err
		}
		for _, vi := range vols {
			ents = append(ents, fuse.DirEntry{Name: vi.Name, Mode: syscall.S_IFDIR, Ino: b.synthNode(synthNode{kind: synthVolume, vol: vi.Name})})
		}
	case synthVolume:
		vi, err := b.repo.Volume(ctx, n.vol)
		if err != nil {
			return nil, err
		}
		revs, err := b.revisions(ctx, n.vol)
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			v := b.viewFor(vi, r)
			ents = append(ents, fuse.DirEntry{Name: RevisionDirName(r), Mode: syscall.S_IFDIR, Ino: v<<viewBits | uint64(layers.RootIno)})
		}
		ents = append(ents, fuse.DirEntry{Name: "tags", Mode: syscall.S_IFDIR, Ino: b.synthNode(synthNode{kind: synthTags, vol: n.vol})})
		if len(revs) > 0 {
			ents = append(ents, fuse.DirEntry{Name: "latest", Mode: syscall.S_IFLNK, Ino: b.synthNode(synthNode{kind: synthLatest, vol: n.vol})})
		}
	case synthTags:
		revs, err := b.revisions(ctx, n.vol)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		var tags []string
		for _, r := range revs {
			for _, t := range r.Tags {
				if showableTag(t) && !seen[t] {
					seen[t] = true
					tags = append(tags, t)
				}
			}
		}
		sort.Strings(tags)
		for _, t := range tags {
			ents = append(ents, fuse.DirEntry{Name: t, Mode: syscall.S_IFLNK, Ino: b.synthNode(synthNode{kind: synthTag, vol: n.vol, tag: t})})
		}
	default:
		return nil, layers.ErrNotDir
	}
	return ents, nil
}

// showableTag reports whether tag can be a name in VOLUME/tags/. Tags
// are checked when set (layers.CheckTag), but older repositories may
// hold one with a '/' or a NUL: the kernel fails a whole READDIR reply
// with EIO on such a name, hiding every tag after it, so those are left
// out (specs still name them).
func showableTag(tag string) bool {
	return layers.CheckName(tag) == nil
}

func (b *browseFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if v := in.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(newCtx(cancel), in.NodeId)
		if !st.Ok() {
			return st
		}
		defer done()
		return fs.OpenDir(cancel, in, out)
	}
	n, ok := b.synthByIno(in.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	if n.kind == synthLatest || n.kind == synthTag {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

func (b *browseFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return b.readDir(cancel, in, out, false)
}

func (b *browseFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return b.readDir(cancel, in, out, true)
}

func (b *browseFS) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	ctx := newCtx(cancel)
	if v := in.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(ctx, in.NodeId)
		if !st.Ok() {
			return st
		}
		defer done()
		if plus {
			return fs.ReadDirPlus(cancel, in, out)
		}
		return fs.ReadDir(cancel, in, out)
	}
	n, ok := b.synthByIno(in.NodeId)
	if !ok {
		return fuse.ENOENT
	}
	// Synthetic directories are small (volumes, revisions, tags): list
	// them whole and index by offset.
	ents, err := b.listing(ctx, n)
	if err != nil {
		return b.errs.status("readdir", err)
	}
	ents = append([]fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: in.NodeId},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: 1},
	}, ents...)
	for i := in.Offset; i < uint64(len(ents)); i++ {
		e := ents[i]
		e.Off = i + 1
		if plus {
			// No attributes: NodeId 0 makes the kernel look entries up.
			if out.AddDirLookupEntry(e) == nil {
				break
			}
		} else if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (b *browseFS) ReleaseDir(in *fuse.ReleaseIn) {
	if v := in.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(context.Background(), in.NodeId)
		if st.Ok() {
			defer done()
			fs.ReleaseDir(in)
		}
	}
}

func (b *browseFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if v := in.NodeId >> viewBits; v != 0 {
		fs, done, st := b.acquire(newCtx(cancel), in.NodeId)
		if !st.Ok() {
			return st
		}
		defer done()
		return fs.Open(cancel, in, out)
	}
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return errROFS
	}
	return fuse.ENOSYS // zero-message open, as treeFS.Open
}

func (b *browseFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	v := in.NodeId >> viewBits
	if v == 0 {
		return nil, fuse.EISDIR
	}
	fs, done, st := b.acquire(newCtx(cancel), in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	defer done()
	return fs.Read(cancel, in, buf)
}

func (b *browseFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	v := in.NodeId >> viewBits
	if v == 0 {
		return fuse.ENOSYS
	}
	fs, done, st := b.acquire(newCtx(cancel), in.NodeId)
	if !st.Ok() {
		return st
	}
	defer done()
	return fs.Lseek(cancel, in, out)
}

func (b *browseFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

// Flush: everything is read-only; ENOSYS stops further FLUSH requests.
func (b *browseFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

func (b *browseFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	v := h.NodeId >> viewBits
	if v == 0 {
		return 0, fuse.ENODATA
	}
	fs, done, st := b.acquire(newCtx(cancel), h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	defer done()
	return fs.GetXAttr(cancel, h, name, dest)
}

func (b *browseFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	v := h.NodeId >> viewBits
	if v == 0 {
		return 0, fuse.OK
	}
	fs, done, st := b.acquire(newCtx(cancel), h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	defer done()
	return fs.ListXAttr(cancel, h, dest)
}

func (b *browseFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return statFS(newCtx(cancel), b.repo, b.errs, out)
}

// MountBrowse mounts every volume and revision of r at dir, read-only:
// VOLUME/<UTC time>_<id8>/ per revision (fs volumes show the tree, block
// volumes disk.img), VOLUME/tags/<tag> and VOLUME/latest as symlinks to
// the newest matching revision. Revision views open on first use.
func MountBrowse(ctx context.Context, dir string, r *layers.Repo, opts Options) (*Mount, error) {
	opts = opts.withDefaults()
	if opts.Repo == nil {
		opts.Repo = r
	}
	errs := &errLog{logger: opts.Logger, now: opts.Now}
	b := newBrowseFS(r, opts, errs)
	m, err := mount(ctx, dir, b, opts, mountParams{name: "browse", acl: true, readOnly: true, linksMove: true})
	if err != nil {
		return nil, err
	}
	m.inUse = func() []RevisionRef { return b.inUse(browseInUse) }
	go func() {
		m.Wait()
		b.closeAll()
	}()
	return m, nil
}
