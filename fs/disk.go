package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// DiskImageName is the one file of a block volume mount.
const DiskImageName = "disk.img"

// Inode numbers inside a disk view.
const (
	diskRootIno = 1
	diskFileIno = 2
)

// diskFS shows a block volume as a directory holding one file, disk.img,
// whose size is fixed: dd conv=notrunc and loop mounts work on it without
// the nbd kernel module.
type diskFS struct {
	fuse.RawFileSystem

	disk  *layers.Disk
	base  uint64
	cache cacheTimes
	mtime time.Time // shown as every time of both inodes
	opts  Options
	errs  *errLog
	// owner of disk.img: the server's user, read once, not per GETATTR
	uid, gid uint32
}

func newDiskFS(d *layers.Disk, base uint64, cache cacheTimes, mtime time.Time, opts Options, errs *errLog) *diskFS {
	return &diskFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), disk: d, base: base, cache: cache, mtime: mtime, opts: opts, errs: errs,
		uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
}

func (f *diskFS) String() string { return "strata" }

func (f *diskFS) attr(ino uint64, out *fuse.Attr) {
	ro := f.disk.ReadOnly()
	a := layers.Attr{Ino: layers.Ino(ino), Atime: f.mtime, Mtime: f.mtime, Ctime: f.mtime}
	switch ino {
	case diskRootIno:
		a.Mode, a.Nlink = syscall.S_IFDIR|0o755, 2
		if ro {
			a.Mode = syscall.S_IFDIR | 0o555
		}
	default:
		// A disk image holds a whole filesystem, whose own permissions
		// nothing enforces on raw reads: only the owner of the server may
		// read it, whatever the mount lets in.
		a.Mode, a.Nlink, a.Size = syscall.S_IFREG|0o600, 1, f.disk.Size()
		if ro {
			a.Mode = syscall.S_IFREG | 0o400
		}
		a.Uid, a.Gid = f.uid, f.gid
	}
	fillAttr(a, f.base|ino, out)
}

func (f *diskFS) entry(ino uint64, out *fuse.EntryOut) {
	out.NodeId = f.base | ino
	out.Generation = 1
	out.SetEntryTimeout(f.cache.entry)
	out.SetAttrTimeout(f.cache.attr)
	f.attr(ino, &out.Attr)
}

func (f *diskFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if h.NodeId&inoMask != diskRootIno {
		return fuse.ENOTDIR
	}
	if name != DiskImageName {
		return fuse.ENOENT
	}
	f.entry(diskFileIno, out)
	return fuse.OK
}

func (f *diskFS) Forget(nodeid, nlookup uint64) {}

func (f *diskFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.SetTimeout(f.cache.attr)
	f.attr(in.NodeId&inoMask, &out.Attr)
	return fuse.OK
}

// SetAttr accepts what tools do to an existing image (dd, qemu-img set
// times or "truncate" to the same size) but refuses a size change: the
// device size is fixed at volume creation.
func (f *diskFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if f.disk.ReadOnly() {
		return errROFS
	}
	if s, ok := in.GetSize(); ok && int64(s) != f.disk.Size() {
		// Most often dd without conv=notrunc, which truncates first.
		f.errs.log("truncate "+DiskImageName, errFixedSize)
		return fuse.Status(syscall.EPERM)
	}
	out.SetTimeout(f.cache.attr)
	f.attr(in.NodeId&inoMask, &out.Attr)
	return fuse.OK
}

// The namespace is fixed: one directory holding disk.img. What rsync,
// mkdir, rm or mv try gets EPERM (not go-fuse's default ENOSYS, "Function
// not implemented", which reads like a bug), and the server log says why.
func (f *diskFS) refuse(op string) fuse.Status {
	if f.disk.ReadOnly() {
		return errROFS
	}
	f.errs.log(op, errBlockNamespace)
	return fuse.Status(syscall.EPERM)
}

var errFixedSize = errors.New("a block volume's size is fixed; write " + DiskImageName + " in place: dd conv=notrunc (dd truncates without it), qemu-img convert -n")

var errBlockNamespace = errors.New("a block volume's staging holds only " + DiskImageName + ", written in place (dd conv=notrunc, qemu-img, mount -o loop); files cannot be created, removed or renamed there")

func (f *diskFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.refuse("mkdir " + name)
}

func (f *diskFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.refuse("mknod " + name)
}

func (f *diskFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return f.refuse("create " + name)
}

func (f *diskFS) Unlink(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	return f.refuse("unlink " + name)
}

func (f *diskFS) Rmdir(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	return f.refuse("rmdir " + name)
}

func (f *diskFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName string, newName string) fuse.Status {
	return f.refuse("rename " + oldName)
}

func (f *diskFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.refuse("link " + name)
}

func (f *diskFS) Symlink(cancel <-chan struct{}, in *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	return f.refuse("symlink " + linkName)
}

func (f *diskFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId&inoMask == diskRootIno {
		return fuse.Status(syscall.EISDIR)
	}
	if f.disk.ReadOnly() {
		if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			return errROFS
		}
		return fuse.ENOSYS // zero-message open, as treeFS.Open
	}
	if f.cache.keepCache {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return fuse.OK
}

func (f *diskFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	off, size := int64(in.Offset), f.disk.Size()
	if off >= size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	p := buf[:min(int64(in.Size), size-off)]
	n, err := f.disk.ReadAt(newCtx(cancel), p, off)
	if err != nil && err != io.EOF {
		return nil, f.errs.status("read disk", err)
	}
	return fuse.ReadResultData(p[:n]), fuse.OK
}

func (f *diskFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if f.disk.ReadOnly() {
		return 0, errROFS
	}
	off, size := int64(in.Offset), f.disk.Size()
	if off >= size {
		return 0, fuse.Status(syscall.ENOSPC)
	}
	// A write across the end is cut short, as on a block device; the
	// writer's next write then gets ENOSPC.
	p := data[:min(int64(len(data)), size-off)]
	n, err := f.disk.WriteAt(newCtx(cancel), p, off)
	if err != nil {
		return uint32(n), f.errs.status("write disk", err)
	}
	return uint32(n), fuse.OK
}

func (f *diskFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if f.disk.ReadOnly() {
		return fuse.OK
	}
	return f.errs.status("fsync disk", f.disk.Flush(newCtx(cancel)))
}

func (f *diskFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if f.disk.ReadOnly() {
		return fuse.ENOSYS // no more FLUSH requests on this mount
	}
	return fuse.OK
}

func (f *diskFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

// Fallocate: PUNCH_HOLE becomes Disk.Zero (whole blocks turn into holes);
// allocation inside the device is a no-op (holes cost nothing), beyond it
// ENOSPC.
func (f *diskFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if f.disk.ReadOnly() {
		return errROFS
	}
	const keepSize, punchHole, zeroRange = 0x1, 0x2, 0x10
	off, n := int64(in.Offset), int64(in.Length)
	size := f.disk.Size()
	switch in.Mode {
	case 0, keepSize:
		if off+n > size && in.Mode == 0 {
			return fuse.Status(syscall.ENOSPC)
		}
		return fuse.OK
	case punchHole | keepSize, zeroRange, zeroRange | keepSize:
		if off >= size {
			return fuse.OK
		}
		n = min(n, size-off)
		return f.errs.status("zero disk", f.disk.Zero(newCtx(cancel), off, n))
	default:
		return fuse.Status(syscall.EOPNOTSUPP)
	}
}

func (f *diskFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	const seekData, seekHole = 3, 4
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.ENOSYS
	}
	off, err := seekExtents(newCtx(cancel), f.disk.Size(), int64(in.Offset), in.Whence == seekData,
		func(ctx context.Context, off, n int64) ([]layers.Extent, error) { return f.disk.Extents(ctx, off, n) })
	if err == errENXIO {
		return fuse.Status(syscall.ENXIO)
	}
	if err != nil {
		return f.errs.status("lseek disk", err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

func (f *diskFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId&inoMask != diskRootIno {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

func (f *diskFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, false)
}

func (f *diskFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, true)
}

// readDir lists ".", ".." and disk.img at offsets 0, 1, 2.
func (f *diskFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	ents := []fuse.DirEntry{
		{Name: ".", Ino: f.base | diskRootIno, Mode: syscall.S_IFDIR},
		{Name: "..", Ino: f.base | diskRootIno, Mode: syscall.S_IFDIR},
		{Name: DiskImageName, Ino: f.base | diskFileIno, Mode: syscall.S_IFREG},
	}
	for i := in.Offset; i < uint64(len(ents)); i++ {
		e := ents[i]
		e.Off = i + 1
		if !plus {
			if !out.AddDirEntry(e) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if e.Name == DiskImageName {
			f.entry(diskFileIno, eo)
		}
	}
	return fuse.OK
}

func (f *diskFS) ReleaseDir(in *fuse.ReleaseIn) {}

func (f *diskFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return statFS(newCtx(cancel), f.opts.Repo, f.errs, out)
}

// GetXAttr: the image has no extended attributes (ls and cp ask).
func (f *diskFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	return 0, fuse.ENODATA
}

func (f *diskFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	return 0, fuse.OK
}

// MountDisk mounts a block volume view at dir as a directory holding
// disk.img: read-write for a staging disk, read-only (EROFS) for a
// revision. fsync and Unmount run Disk.Flush.
func MountDisk(ctx context.Context, dir string, d *layers.Disk, opts Options) (*Mount, error) {
	opts = opts.withDefaults()
	errs := &errLog{logger: opts.Logger, now: opts.Now}
	ro := d.ReadOnly()
	cache := stagingCache
	p := mountParams{name: "disk", readOnly: ro, flush: d.Flush}
	if ro {
		cache, p.flush = revisionCache, nil
	}
	raw := newDiskFS(d, 0, cache, opts.Now(), opts, errs)
	return mount(ctx, dir, raw, opts, p)
}
