package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// Write operations of treeFS. On a read-only view (st nil) every one
// fails with EROFS; the kernel normally refuses them first (MS_RDONLY).

var errROFS = fuse.Status(syscall.EROFS)

func (f *treeFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	var sa layers.SetAttr
	if m, ok := in.GetMode(); ok {
		m &= 07777
		sa.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		sa.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		sa.Gid = &g
	}
	if s, ok := in.GetSize(); ok {
		sz := int64(s)
		sa.Size = &sz
	}
	// go-fuse's GetATime/GetMTime read the wall clock for UTIME_NOW; we
	// use Options.Now so tests control time.
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0 {
		t := f.opts.Now()
		if in.Valid&fuse.FATTR_ATIME_NOW == 0 {
			t = time.Unix(int64(in.Atime), int64(in.Atimensec))
		}
		sa.Atime = &t
	}
	if in.Valid&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		t := f.opts.Now()
		if in.Valid&fuse.FATTR_MTIME_NOW == 0 {
			t = time.Unix(int64(in.Mtime), int64(in.Mtimensec))
		}
		sa.Mtime = &t
	}
	ctx := newCtx(cancel)
	a, err := f.st.SetAttr(ctx, f.ino(in.NodeId), sa)
	if err == nil && sa.Mode != nil && *sa.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		// After the change: a write that looked before it must not
		// record the inode clear (privsDropped compares generations).
		f.open.privsMayChange(a.Ino)
	}
	if err == nil && sa.Mode != nil && a.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		err = f.chmodACL(ctx, a.Ino, *sa.Mode)
	}
	if err != nil {
		return f.status("setattr", err)
	}
	out.SetTimeout(f.cache.attr)
	f.fillAttr(a, &out.Attr)
	return fuse.OK
}

func (f *treeFS) entryResult(op string, a layers.Attr, err error, out *fuse.EntryOut) fuse.Status {
	if err != nil {
		return f.status(op, err)
	}
	f.fillEntry(a, out)
	return fuse.OK
}

func (f *treeFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	ctx := newCtx(cancel)
	parent := f.ino(in.NodeId)
	mode, xattrs, err := f.inherit(ctx, parent, in.Mode, in.Umask, false)
	if err != nil {
		return f.status("mknod", err)
	}
	a, err := f.st.Create(ctx, parent, name, mode, in.Uid, in.Gid, uint64(in.Rdev))
	if err == nil {
		err = f.setInherited(ctx, a.Ino, xattrs)
	}
	return f.entryResult("mknod", a, err, out)
}

func (f *treeFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	ctx := newCtx(cancel)
	parent := f.ino(in.NodeId)
	mode, xattrs, err := f.inherit(ctx, parent, in.Mode&07777, in.Umask, true)
	if err != nil {
		return f.status("mkdir", err)
	}
	a, err := f.st.Mkdir(ctx, parent, name, mode, in.Uid, in.Gid)
	if err == nil {
		err = f.setInherited(ctx, a.Ino, xattrs)
	}
	st := f.entryResult("mkdir", a, err, out)
	if st == fuse.OK {
		f.warm.made(out.NodeId)
	}
	return st
}

func (f *treeFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	a, err := f.st.Symlink(newCtx(cancel), f.ino(h.NodeId), name, target, h.Uid, h.Gid)
	return f.entryResult("symlink", a, err, out)
}

func (f *treeFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	a, err := f.st.Link(newCtx(cancel), f.ino(in.Oldnodeid), f.ino(in.NodeId), name)
	return f.entryResult("link", a, err, out)
}

func (f *treeFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	return f.status("unlink", f.st.Unlink(newCtx(cancel), f.ino(h.NodeId), name))
}

func (f *treeFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	return f.status("rmdir", f.st.Rmdir(newCtx(cancel), f.ino(h.NodeId), name))
}

func (f *treeFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	// renameat2 flag values are the layers constants; RENAME_WHITEOUT
	// (overlayfs) has no meaning here.
	if in.Flags&^(layers.RenameNoReplace|layers.RenameExchange) != 0 {
		return fuse.EINVAL
	}
	err := f.st.Rename(newCtx(cancel), f.ino(in.NodeId), oldName, f.ino(in.Newdir), newName, in.Flags)
	return f.status("rename", err)
}

func (f *treeFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	ctx := newCtx(cancel)
	parent := f.ino(in.NodeId)
	mode, xattrs, err := f.inherit(ctx, parent, in.Mode&07777|syscall.S_IFREG, in.Umask, false)
	if err != nil {
		return f.status("create", err)
	}
	a, err := f.st.Create(ctx, parent, name, mode, in.Uid, in.Gid, 0)
	if err == nil {
		err = f.setInherited(ctx, a.Ino, xattrs)
	}
	if err != nil {
		return f.status("create", err)
	}
	f.fillEntry(a, &out.EntryOut)
	writable := in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY
	f.st.Hold(a.Ino) // Release unholds
	out.Fh = f.files.add(&fileHandle{oi: f.open.create(a), writable: writable})
	if writable {
		// Writes through the page cache make the kernel ask for the
		// security.capability xattr before every write(2) (to drop
		// file capabilities), one GETXATTR round trip per file rsync
		// writes. Direct I/O writes skip that check and, as the page
		// cache writes were write-through anyway, cost nothing else;
		// mmap still works (CAP_DIRECT_IO_ALLOW_MMAP).
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	}
	return fuse.OK
}

func (f *treeFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if f.st == nil {
		return 0, errROFS
	}
	ctx := newCtx(cancel)
	ino := f.ino(in.NodeId)
	if h, ok := f.files.get(in.Fh); ok {
		if check, gen := f.open.privsToCheck(h.oi); check {
			clear, err := f.killPrivs(ctx, in.NodeId, ino, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0)
			if err != nil {
				return 0, f.status("write", err)
			}
			if clear {
				f.open.privsDropped(h.oi, gen)
			}
		}
	}
	n, err := f.st.WriteAt(ctx, ino, data, int64(in.Offset))
	if err != nil {
		return uint32(n), f.status("write", err)
	}
	return uint32(n), fuse.OK
}

// killPrivs does before a write what the kernel does before page-cache
// writes and leaves to us for direct I/O: drop file capabilities, and the
// set-user-ID bit (set-group-ID too, with group execute) when the writer
// lacks CAP_FSETID (the kernel says so in the write flags). It reports
// whether the inode is left with nothing a later write could drop, so
// writes skip the check until capabilities or set-ID bits come back
// (openInodes.privsMayChange); files rsync creates never need it.
func (f *treeFS) killPrivs(ctx context.Context, node uint64, ino layers.Ino, suid bool) (bool, error) {
	changed := false
	if _, err := f.tree.GetXattr(ctx, ino, capabilityXattr); err == nil {
		if err := f.st.RemoveXattr(ctx, ino, capabilityXattr); err != nil && !errors.Is(err, layers.ErrNoXattr) {
			return false, err
		}
		changed = true
	} else if !errors.Is(err, layers.ErrNoXattr) {
		return false, err
	}
	a, err := f.tree.GetAttr(ctx, ino)
	if err != nil {
		return false, err
	}
	mode := a.Mode & 0o7777
	kill := uint32(syscall.S_ISUID)
	if mode&syscall.S_IXGRP != 0 {
		kill |= syscall.S_ISGID
	}
	if suid && mode&kill != 0 {
		mode &^= kill
		if _, err := f.st.SetAttr(ctx, ino, layers.SetAttr{Mode: &mode}); err != nil {
			return false, err
		}
		changed = true
	}
	if changed {
		f.invalidateAttr(node)
	}
	return mode&kill == 0, nil
}

// invalidateAttr makes the kernel forget the attributes it caches for
// node, after we changed its mode behind the request it sent. It runs
// before the reply, so the caller's next stat(2) asks again (done in a
// goroutine, the notification could land after it). That is safe in a
// handler: an attribute-only invalidation (offset -1) takes no inode
// lock in the kernel, unlike entry or page invalidations.
func (f *treeFS) invalidateAttr(node uint64) {
	if f.srv != nil {
		f.srv.InodeNotify(node, -1, 0)
	}
}

// Init keeps the server for notifications (killPrivs).
func (f *treeFS) Init(s *fuse.Server) { f.srv = s }

// capabilityXattr holds file capabilities (capabilities(7)).
const capabilityXattr = "security.capability"

// Flush would run on every close(2); ENOSYS makes the kernel stop sending
// it, one round trip less per file rsync writes. Release, which follows
// the last close, starts chunking the file's buffered writes instead;
// nothing is lost, since a close was never a durability point (fsync is).
func (f *treeFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

func (f *treeFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if f.st == nil {
		return fuse.OK
	}
	return f.status("fsync", f.st.FlushFile(newCtx(cancel), f.ino(in.NodeId), true))
}

func (f *treeFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, value []byte) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	ctx := newCtx(cancel)
	if name == aclAccess {
		changed, err := f.setAccessACL(ctx, f.ino(in.NodeId), value, in.Flags)
		if changed {
			f.invalidateAttr(in.NodeId)
		}
		return f.status("setxattr", err)
	}
	err := f.st.SetXattr(ctx, f.ino(in.NodeId), name, value, in.Flags)
	if err == nil && name == capabilityXattr {
		f.open.privsMayChange(f.ino(in.NodeId)) // after the change, as in SetAttr
	}
	return f.status("setxattr", err)
}

func (f *treeFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	return f.status("removexattr", f.st.RemoveXattr(newCtx(cancel), f.ino(h.NodeId), name))
}

// Fallocate supports what sparse files need: plain allocation only grows
// the size (holes cost nothing, so there is nothing to reserve), KEEP_SIZE
// is a no-op, and PUNCH_HOLE writes zeros, which layers stores as holes.
func (f *treeFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if f.st == nil {
		return errROFS
	}
	const keepSize, punchHole = 0x1, 0x2
	ctx := newCtx(cancel)
	ino := f.ino(in.NodeId)
	off, n := int64(in.Offset), int64(in.Length)
	switch in.Mode {
	case 0:
		a, err := f.tree.GetAttr(ctx, ino)
		if err != nil {
			return f.status("fallocate", err)
		}
		if end := off + n; end > a.Size {
			_, err = f.st.SetAttr(ctx, ino, layers.SetAttr{Size: &end})
		}
		return f.status("fallocate", err)
	case keepSize:
		return fuse.OK
	case punchHole | keepSize:
		return f.status("fallocate", f.punch(ctx, ino, off, n))
	default:
		return fuse.Status(syscall.EOPNOTSUPP)
	}
}

func (f *treeFS) punch(ctx context.Context, ino layers.Ino, off, n int64) error {
	a, err := f.tree.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	end := min(off+n, a.Size)
	zero := make([]byte, min(end-off, 1<<20))
	for off < end {
		k := min(int64(len(zero)), end-off)
		if _, err := f.st.WriteAt(ctx, ino, zero[:k], off); err != nil {
			return err
		}
		off += k
	}
	return nil
}
