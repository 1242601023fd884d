package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
)

type restoreCmd struct {
	Target string `arg:"" help:"NAME@REV[:PATH] — a revision, or a path inside an fs revision."`
	Dest   string `arg:"" help:"fs volumes: a directory (created if missing); a :PATH naming a file goes into DEST if DEST is a directory, else becomes DEST, as with cp. Files already there with the same size and mtime are kept (a rerun resumes). Block volumes: the whole image (no :PATH) to a file (sparse; removed again if the restore fails), a device (at least the volume's size, checked before anything is written) or '-' for stdout; not a directory."`
}

type restoreArgs struct {
	Volume string `json:"volume"`
	Rev    string `json:"rev"`
	Path   string `json:"path,omitempty"`
	Dest   string `json:"dest"`
	// Stdout: Dest is a FIFO the client copies to its standard output.
	Stdout bool `json:"stdout,omitempty"`
}

type restoreResult struct {
	Revision string `json:"revision"`
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
	Skipped  int64  `json:"skipped"` // already present and identical (resumed)
	// Unreadable counts files whose data is damaged beyond what parity
	// restores; Damaged names the first maxDamagedListed of them. The
	// restore goes on past them: everything else is worth having.
	Unreadable int64    `json:"unreadable,omitempty"`
	Damaged    []string `json:"damaged,omitempty"`
}

// maxDamagedListed bounds the paths a restore reports as unreadable.
const maxDamagedListed = 1000

func (c *restoreCmd) Run(ctx context.Context, g *Globals) error {
	vol, rev, p := splitTarget(c.Target)
	if rev == "" {
		rev = "latest"
	}
	a := restoreArgs{Volume: vol, Rev: rev, Path: p, Dest: c.Dest}
	if c.Dest == "-" {
		return restoreToStdout(ctx, g, a)
	}
	abs, err := filepath.Abs(c.Dest)
	if err != nil {
		return err
	}
	a.Dest = abs
	var res restoreResult
	if err := call(ctx, g, "restore", a, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	fmt.Fprintf(os.Stderr, "restored %s@%s to %s: %s, %s", vol, res.Revision[:8], a.Dest, count(res.Files, "file"), humanBytes(res.Bytes))
	if res.Skipped > 0 {
		fmt.Fprintf(os.Stderr, " (%d already there)", res.Skipped)
	}
	fmt.Fprintln(os.Stderr)
	if res.Unreadable > 0 {
		for i, p := range res.Damaged {
			if i == 20 {
				fmt.Fprintf(os.Stderr, "  ... and %d more\n", res.Unreadable-20)
				break
			}
			fmt.Fprintf(os.Stderr, "  unreadable: %s\n", p)
		}
		return fail(exitError, "the repository is damaged beyond its parity there: bring back missing shard dirs if you can ('strata scrub' tells which), else take those files from another copy",
			"%s could not be read and %s left out", count(res.Unreadable, "file"), was(res.Unreadable))
	}
	return nil
}

// restoreToStdout has the restore write into a FIFO that this process
// copies to its standard output: the restore may run in a server (one
// serving NBD or mounts), which cannot write to our stdout.
func restoreToStdout(ctx context.Context, g *Globals, a restoreArgs) error {
	dir, err := os.MkdirTemp("", "strata-restore-")
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	defer os.RemoveAll(dir)
	fifo := filepath.Join(dir, "stdout")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	// Our read end first, so the restore's open does not block; then a
	// write end held until the restore returned, so the copy reads EOF
	// only after the restore's writes, not before they start.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	defer r.Close()
	w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(os.Stdout, r)
		if err != nil {
			// Stdout went away (| head): with no reader left the
			// restore's next write fails instead of blocking.
			r.Close()
		}
		copied <- err
	}()
	a.Dest, a.Stdout = fifo, true
	var res restoreResult
	callErr := call(ctx, g, "restore", a, &res)
	w.Close()
	copyErr := <-copied
	if copyErr != nil {
		return fmt.Errorf("write stdout: %w", copyErr)
	}
	if callErr != nil {
		return callErr
	}
	if g.JSON {
		return json.NewEncoder(os.Stderr).Encode(res)
	}
	return nil
}

func opRestore(ctx context.Context, env *opEnv, a restoreArgs) (any, error) {
	lr := env.repo.layers
	info, err := lr.Volume(ctx, a.Volume)
	if err != nil {
		return nil, volumeErr(err, a.Volume)
	}
	r, err := resolve(ctx, lr, a.Volume, a.Rev)
	if err != nil {
		return nil, err
	}
	res := restoreResult{Revision: r.ID}
	if info.Type == layers.TypeBlock && a.Path != "" {
		return nil, fail(exitUsage, "restore the whole image (strata restore "+a.Volume+"@"+a.Rev+" FILE), or mount the revision and loop-mount its disk.img to copy files", "%s is a block volume: it has no paths (%q)", a.Volume, a.Path)
	}
	if a.Stdout && info.Type != layers.TypeBlock {
		return nil, fail(exitUsage, "restore a file tree to a directory, or read single files from 'strata mount "+a.Volume+"@"+a.Rev+" MNT'", "'-' (standard output) takes a block volume's disk image; %s is a file tree", a.Volume)
	}
	if info.Type == layers.TypeBlock {
		d, err := lr.RevisionDisk(ctx, a.Volume, r.ID)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		name := a.Dest
		if a.Stdout {
			name = "standard output"
		}
		n, err := restoreDisk(ctx, d, a.Dest, name, a.Volume+"@"+a.Rev, env.progress)
		res.Bytes, res.Files = n, 1
		return res, err
	}
	t, err := lr.Snapshot(ctx, a.Volume, r.ID)
	if err != nil {
		return nil, err
	}
	rs := &treeRestorer{t: t, progress: env.progress, links: map[layers.Ino]string{}, total: r.Size}
	err = rs.restore(ctx, a.Path, a.Dest)
	res.Files, res.Bytes, res.Skipped = rs.files, rs.bytes, rs.skipped
	res.Unreadable, res.Damaged = rs.unreadable, rs.damaged
	return res, err
}

// restoreDisk copies a block revision (what names it: vm@first) to dest
// (a file, device or FIFO; name is what messages call it). Holes are
// skipped (seeked over) on files, so the copy stays sparse; devices and
// FIFOs get zeros. A device too small for the image is refused before
// anything is written; a file this call created goes again if the
// restore fails, as a partial image is no use.
func restoreDisk(ctx context.Context, d *layers.Disk, dest, name, what string, prog func(progress)) (n int64, err error) {
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		return 0, fail(exitUsage, "give a file or device to write the image to, e.g. "+filepath.Join(dest, "disk.img"),
			"%s is a directory; %s is a disk image", dest, what)
	}
	created := true
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, iofs.ErrExist) {
		created = false
		f, err = os.OpenFile(dest, os.O_WRONLY, 0)
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", name, bareErr(err))
	}
	defer f.Close()
	if created {
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(dest)
			}
		}()
	}
	// The destination's ENOSPC is not the repository's (the generic hint
	// in report says a shard or spool filesystem is full).
	writeErr := func(op string, err error) error {
		if errors.Is(err, syscall.ENOSPC) {
			hint := "the filesystem of " + name + " is full: free space there or restore elsewhere; nothing in the repository changed"
			if created {
				hint += " (the partial image was removed)"
			}
			return fail(exitError, hint, "%s %s: %v", op, name, bareErr(err))
		}
		return fmt.Errorf("%s %s: %w", op, name, bareErr(err))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", name, err)
	}
	mode := st.Mode & syscall.S_IFMT
	if mode == syscall.S_IFBLK {
		var devSize uint64
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&devSize))); e != 0 {
			return 0, fmt.Errorf("size of %s: %w", name, e)
		}
		if int64(devSize) < d.Size() {
			return 0, fail(exitError, "restore to a device of at least "+humanBytes(d.Size())+", or to a file",
				"%s is %s, %s is %s: it does not fit (nothing was written)", name, humanBytes(int64(devSize)), what, humanBytes(d.Size()))
		}
	}
	sparse := mode == syscall.S_IFREG
	if sparse {
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("truncate %s: %w", name, bareErr(err))
		}
		if err := f.Truncate(d.Size()); err != nil {
			if errors.Is(err, syscall.EFBIG) {
				return 0, fail(exitError, "restore to a filesystem that takes files this large (ext4 with 4 KiB blocks: 16 TiB; XFS: 8 EiB), or to a device",
					"%s: the filesystem cannot hold a file of %s (%s)", name, humanBytes(d.Size()), what)
			}
			return 0, fmt.Errorf("size %s: %w", name, bareErr(err))
		}
	}
	size := d.Size()
	buf := make([]byte, 4<<20)
	var done int64
	const step = 1 << 30
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; off += step {
		exts, err := d.Extents(ctx, off, min(step, size-off))
		if err != nil {
			return done, fmt.Errorf("map blocks: %w", err)
		}
		for _, e := range exts {
			for p := e.Off; p < e.Off+e.Len; {
				n := min(int64(len(buf)), e.Off+e.Len-p)
				if e.Hole {
					if !sparse {
						if _, err := f.Write(zero[:n]); err != nil {
							return done, writeErr("write", err)
						}
					}
				} else {
					if _, err := d.ReadAt(ctx, buf[:n], p); err != nil {
						return done, fmt.Errorf("read at %d: %w", p, err)
					}
					if sparse {
						_, err = f.WriteAt(buf[:n], p)
					} else {
						_, err = f.Write(buf[:n])
					}
					if err != nil {
						return done, writeErr("write", err)
					}
				}
				p += n
				done += n
				if prog != nil {
					prog(progress{Phase: "restore", Done: done, Total: size, Unit: "bytes"})
				}
			}
		}
	}
	if mode == syscall.S_IFREG || mode == syscall.S_IFBLK {
		if err := f.Sync(); err != nil {
			return done, writeErr("sync", err)
		}
	}
	return done, f.Close()
}

// bareErr strips an *iofs.PathError's operation and path, for messages that
// name the file themselves ("write /dev/loop0: write /dev/loop0: ...").
func bareErr(err error) error {
	var pe *iofs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// treeRestorer copies a revision's tree out, as `cp -a` from the mount
// would: owners, modes, times, xattrs, hard links, holes. Files already at
// the destination with the same size and mtime are skipped, so an
// interrupted restore resumes.
type treeRestorer struct {
	t        *layers.Tree
	progress func(progress)
	links    map[layers.Ino]string // first path restored for each multiply-linked inode
	files    int64
	bytes    int64
	skipped  int64
	total    int64
	// unreadable counts files left out as damaged; damaged names them.
	unreadable int64
	damaged    []string
	last       time.Time
}

func (r *treeRestorer) restore(ctx context.Context, sub, dest string) error {
	ino, attr := layers.RootIno, layers.Attr{}
	var err error
	attr, err = r.t.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+sub), "/"), "/") {
		if name == "" {
			continue
		}
		attr, err = r.t.Lookup(ctx, ino, name)
		if err != nil {
			return fail(exitError, "", "%s: no such path in the revision", sub)
		}
		ino = attr.Ino
		// The revision's size is no total for a part of it; a file's own
		// size is, a directory's is unknown without a walk (no percentage).
		r.total = 0
		if attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
			r.total = attr.Size
		}
	}
	if attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return err
		}
		return r.dir(ctx, ino, attr, dest)
	}
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		dest = filepath.Join(dest, path.Base(sub))
	}
	return r.entry(ctx, attr, dest)
}

func (r *treeRestorer) dir(ctx context.Context, ino layers.Ino, attr layers.Attr, dest string) error {
	var ents []layers.Dirent
	after := ""
	for {
		// Batches bound memory for huge directories.
		batch := 0
		err := r.t.ReadDir(ctx, ino, after, func(d layers.Dirent) bool {
			ents = append(ents, d)
			after = d.Name
			batch++
			return batch < 4096
		})
		if err != nil {
			return err
		}
		for _, d := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			a, err := r.t.GetAttr(ctx, d.Ino)
			if err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dest, d.Name), err)
			}
			if err := r.entry(ctx, a, filepath.Join(dest, d.Name)); err != nil {
				return err
			}
		}
		ents = ents[:0]
		if batch < 4096 {
			break
		}
	}
	return r.meta(ctx, attr, dest)
}

func (r *treeRestorer) entry(ctx context.Context, a layers.Attr, p string) error {
	mode := a.Mode & syscall.S_IFMT
	if mode != syscall.S_IFDIR && a.Nlink > 1 {
		if first, ok := r.links[a.Ino]; ok {
			os.Remove(p)
			return os.Link(first, p)
		}
		r.links[a.Ino] = p
	}
	switch mode {
	case syscall.S_IFDIR:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		return r.dir(ctx, a.Ino, a, p)
	case syscall.S_IFREG:
		var de *store.DamageError
		if err := r.file(ctx, a, p); errors.As(err, &de) {
			// Not half a file that looks restored: it goes, and so
			// does its claim to be the first of its hard links.
			os.Remove(p)
			delete(r.links, a.Ino)
			r.unreadable++
			if len(r.damaged) < maxDamagedListed {
				r.damaged = append(r.damaged, p)
			}
			return nil
		} else if err != nil {
			return err
		}
	case syscall.S_IFLNK:
		target, err := r.t.Readlink(ctx, a.Ino)
		if err != nil {
			return err
		}
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	default:
		os.Remove(p)
		if err := unix.Mknod(p, a.Mode, int(a.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
	}
	r.files++
	return r.meta(ctx, a, p)
}

func (r *treeRestorer) file(ctx context.Context, a layers.Attr, p string) error {
	if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() == a.Size && st.ModTime().Equal(a.Mtime) {
		r.skipped++
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(a.Size); err != nil {
		return err
	}
	exts, err := r.t.Extents(ctx, a.Ino, 0, a.Size)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		if e.Hole {
			continue
		}
		for off := e.Off; off < e.Off+e.Len; {
			n := min(int64(len(buf)), e.Off+e.Len-off)
			got, err := r.t.ReadAt(ctx, a.Ino, buf[:n], off)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read %s: %w", p, err)
			}
			if got == 0 {
				break
			}
			if _, err := f.WriteAt(buf[:got], off); err != nil {
				return fmt.Errorf("write %s: %w", p, bareErr(err))
			}
			off += int64(got)
			r.bytes += int64(got)
			if r.progress != nil && time.Since(r.last) > 200*time.Millisecond {
				r.last = time.Now()
				r.progress(progress{Phase: "restore", Done: r.bytes, Total: r.total, Unit: "bytes"})
			}
		}
	}
	return nil
}

// meta applies owner, mode, xattrs and times (last, since writing changes mtime).
func (r *treeRestorer) meta(ctx context.Context, a layers.Attr, p string) error {
	if err := os.Lchown(p, int(a.Uid), int(a.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
		return err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		if err := unix.Chmod(p, a.Mode&0o7777); err != nil {
			return err
		}
	}
	if names, err := r.t.ListXattr(ctx, a.Ino); err == nil {
		for _, n := range names {
			v, err := r.t.GetXattr(ctx, a.Ino, n)
			if err != nil {
				continue
			}
			if err := unix.Lsetxattr(p, n, v, 0); err != nil && !errors.Is(err, syscall.ENOTSUP) {
				return fmt.Errorf("set xattr %s on %s: %w", n, p, err)
			}
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(a.Atime.UnixNano()), unix.NsecToTimespec(a.Mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
