package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
)

// treeRestorer copies a revision's tree out, as `cp -a` from the mount
// would: owners, modes, times, xattrs, hard links, holes.
//
// Into an existing directory it merges: an entry of the revision's type is
// reused (a file with the same size and mtime is kept, so an interrupted
// restore resumes; with checksum its content is compared first); one of
// another type is replaced, except a non-empty directory where the revision
// has a non-directory: that is user data, reported as a conflict and left
// alone. Below DEST no symlink is followed (see restorefd.go).
//
// Problems with one entry (a conflict, an xattr the filesystem cannot hold,
// a refused mknod) are noted and the restore goes on with the rest; errors
// reading the repository, and a full or read-only destination, stop it.
type treeRestorer struct {
	t        *layers.Tree
	checksum bool // compare the content of files kept by size and mtime
	progress func(progress)
	dest     string                // what the user named, for messages
	root     int                   // fd of the directory links are relative to
	rootPath string                // its path, for messages
	links    map[layers.Ino]string // first path (relative to root) restored for each multiply-linked inode
	files    int64
	bytes    int64 // written
	checked  int64 // compared (checksum), for progress
	skipped  int64 // files already there and kept
	// rewritten counts regular files already there that differed (in
	// size, mtime or, with checksum, content) and were written again.
	rewritten int64
	total     int64
	// unreadable counts files left out as damaged; damaged names them.
	unreadable int64
	damaged    []string
	// problems is the number of things not restored as in the revision;
	// problemList describes the first maxProblemsListed.
	problems    int64
	problemList []restoreProblem
	last        time.Time
	buf         []byte // readData's, one for the whole restore
	// here and zero are sameContent's: what DEST holds, and zeros to
	// compare holes with; made on first use, kept for the restore.
	here, zero []byte
}

// restoreProblem is one thing a restore could not do; it went on.
type restoreProblem struct {
	Path    string `json:"path"`
	Kind    string `json:"kind"` // one of the problem* kinds
	Message string `json:"message"`
}

// The kinds of restore problems, as --json names them.
const (
	// problemConflict: a non-empty directory where the revision has
	// something else.
	problemConflict = "conflict"
	// problemXattr: an extended attribute the destination cannot hold.
	problemXattr = "xattr"
	// problemACL: ACLs the destination cannot hold.
	problemACL = "acl"
	// problemPermission: an attribute that needs root.
	problemPermission = "permission"
	problemError      = "error"
)

// maxProblemsListed bounds the problems a restore describes.
const maxProblemsListed = 1000

func (r *treeRestorer) problem(p, kind, msg string) {
	r.problems++
	if len(r.problemList) < maxProblemsListed {
		r.problemList = append(r.problemList, restoreProblem{Path: p, Kind: kind, Message: msg})
	}
}

// settle decides what an entry's error means for the restore: a
// destination error is noted and the restore goes on (nil), unless the
// destination is full or read-only; anything else (the repository, an
// interrupt) stops it.
func (r *treeRestorer) settle(err error) error {
	var de *destError
	if err == nil || !errors.As(err, &de) {
		return err
	}
	if hint := destHint(de.err); hint != "" {
		return fail(exitError, hint+", then run the same restore again: what is already restored is kept; nothing in the repository changed",
			"%s: %v; restore stopped, %s is incomplete", de.op+" "+de.path, de.err, r.dest)
	}
	r.problem(de.path, problemError, de.Error())
	return nil
}

// lookup finds sub (a path in the revision, "" for its root).
func (r *treeRestorer) lookup(ctx context.Context, sub string) (layers.Attr, error) {
	attr, err := r.t.GetAttr(ctx, layers.RootIno)
	if err != nil {
		return attr, err
	}
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+sub), "/"), "/") {
		if name == "" {
			continue
		}
		attr, err = r.t.Lookup(ctx, attr.Ino, name)
		if errors.Is(err, layers.ErrNotFound) {
			return attr, fail(exitError, "", "%s: no such path in the revision", showPath(sub))
		}
		if err != nil {
			return attr, fmt.Errorf("look up %s in the revision: %w", showPath(sub), err)
		}
		// The revision's size is no total for a part of it; a file's own
		// size is, a directory's is unknown without a walk (no percentage).
		r.total = 0
		if attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
			r.total = attr.Size
		}
	}
	return attr, nil
}

// stream writes the regular file sub to w (restore FILE -, as restic
// dump): its bytes only, holes as zeros.
func (r *treeRestorer) stream(ctx context.Context, sub string, w io.Writer) error {
	attr, err := r.lookup(ctx, sub)
	if err != nil {
		return err
	}
	if attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fail(exitUsage, "name a regular file of the revision (NAME@REV:PATH), or restore to a directory", "%s is not a regular file: '-' (standard output) takes one file", showPath(sub))
	}
	r.files = 1 // lookup set r.total to the file's size
	return r.readData(ctx, attr.Ino, showPath(sub), 0, attr.Size, func(b []byte, off int64) error {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write standard output: %w", err)
		}
		r.bytes = off + int64(len(b))
		r.report()
		return nil
	})
}

// readData hands the revision's bytes of ino in [off, end) to fn, in
// pieces of at most one buffer; data that ends inside the range is an
// error (the extents said it was there), as are read errors.
func (r *treeRestorer) readData(ctx context.Context, ino layers.Ino, p string, off, end int64, fn func(b []byte, off int64) error) error {
	if r.buf == nil {
		r.buf = make([]byte, 1<<20)
	}
	for off < end {
		n := min(int64(len(r.buf)), end-off)
		got, err := r.t.ReadAt(ctx, ino, r.buf[:n], off)
		if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
			return fmt.Errorf("read %s at %d: %w", p, off, err)
		}
		if int64(got) != n {
			return fmt.Errorf("read %s: its data ends at %d, before %d", p, off+int64(got), end)
		}
		if err := fn(r.buf[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (r *treeRestorer) restore(ctx context.Context, sub, dest string) error {
	attr, err := r.lookup(ctx, sub)
	if err != nil {
		return err
	}
	ino := attr.Ino
	// DEST itself is the user's to name: a symlink there is followed, as
	// cp and rsync do; below it nothing is.
	parent, name := dest, ""
	if attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dest, bareErr(err))
		}
	} else {
		parent, name = filepath.Dir(dest), filepath.Base(dest)
		if st, err := os.Stat(dest); err == nil && st.IsDir() {
			parent, name = dest, path.Base(sub)
		}
	}
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", parent, err)
	}
	defer unix.Close(fd)
	r.dest, r.root, r.rootPath = dest, fd, parent
	d := destDir{fd: fd, path: parent}
	if name == "" {
		return r.settle(r.dir(ctx, d, ino, attr))
	}
	return r.settle(r.entry(ctx, d, name, attr))
}

// dir restores the entries of directory ino into d, then d's metadata.
func (r *treeRestorer) dir(ctx context.Context, d destDir, ino layers.Ino, attr layers.Attr) error {
	var ents []layers.Dirent
	after := ""
	for {
		// Batches bound memory for huge directories.
		batch := 0
		err := r.t.ReadDir(ctx, ino, after, func(e layers.Dirent) bool {
			ents = append(ents, e)
			after = e.Name
			batch++
			return batch < 4096
		})
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Staging refuses such names; a damaged or crafted index
			// must not turn one into a path out of its directory.
			if errors.Is(layers.CheckName(e.Name), layers.ErrInvalid) {
				r.problem(d.path, problemError, fmt.Sprintf("%s: the revision lists an entry named %q, which no file can have: left out", d.path, e.Name))
				continue
			}
			a, err := r.t.GetAttr(ctx, e.Ino)
			if err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(d.path, e.Name), err)
			}
			if err := r.settle(r.entry(ctx, d, e.Name, a)); err != nil {
				return err
			}
			r.report()
		}
		ents = ents[:0]
		if batch < 4096 {
			break
		}
	}
	return r.meta(ctx, node{fd: d.fd, path: d.path}, attr)
}

// entry restores a as name in d.
func (r *treeRestorer) entry(ctx context.Context, d destDir, name string, a layers.Attr) error {
	p := filepath.Join(d.path, name)
	mode := a.Mode & syscall.S_IFMT
	if mode != syscall.S_IFDIR && a.Nlink > 1 {
		if first, ok := r.links[a.Ino]; ok {
			return r.link(d, name, p, first)
		}
	}
	switch mode {
	case syscall.S_IFDIR:
		fd, err := r.mkdir(d, name, p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return r.dir(ctx, destDir{fd: fd, path: p, rel: relJoin(d.rel, name)}, a.Ino, a)
	case syscall.S_IFREG:
		var de *store.DamageError
		err := r.file(ctx, d, name, p, a)
		if errors.As(err, &de) {
			// file removed what it wrote: not half a file that looks
			// restored.
			r.unreadable++
			if len(r.damaged) < maxDamagedListed {
				r.damaged = append(r.damaged, p)
			}
			return nil
		}
		return err
	case syscall.S_IFLNK:
		target, err := r.t.Readlink(ctx, a.Ino)
		if err != nil {
			return err
		}
		if ok, err := r.makeRoom(d, name, p, "symlink"); !ok {
			return err
		}
		if err := unix.Symlinkat(target, d.fd, name); err != nil {
			return destErr("symlink", p, err)
		}
	default:
		if ok, err := r.makeRoom(d, name, p, "special file"); !ok {
			return err
		}
		if err := unix.Mknodat(d.fd, name, a.Mode, int(a.Rdev)); err != nil {
			return destErr("mknod", p, err)
		}
	}
	r.noteLink(a, d, name)
	r.files++
	fd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return destErr("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return destErr("stat", p, err)
	}
	if st.Mode&syscall.S_IFMT != mode {
		// Replaced since we made it: not ours to change.
		return destErr("set metadata on", p, errors.New("replaced during the restore"))
	}
	return r.meta(ctx, node{fd: fd, opath: true, dir: d.fd, name: name, path: p}, a)
}

// noteLink records the first path restored for a multiply-linked inode, so
// that its other names become hard links to it.
func (r *treeRestorer) noteLink(a layers.Attr, d destDir, name string) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR && a.Nlink > 1 {
		r.links[a.Ino] = relJoin(d.rel, name)
	}
}

// makeRoom clears name in d for a non-directory (what) of the revision.
// ok is false if it could not: err says why, or it is nil when a non-empty
// directory is in the way (a conflict, noted).
func (r *treeRestorer) makeRoom(d destDir, name, p, what string) (ok bool, err error) {
	switch err := removeAt(d.fd, name); {
	case errors.Is(err, errNotEmpty):
		r.problem(p, problemConflict, fmt.Sprintf("%s: a non-empty directory here but a %s in the revision: left as it is, the %s not restored", p, what, what))
		return false, nil
	case err != nil:
		return false, destErr("remove", p, err)
	}
	return true, nil
}

// mkdir makes (or reuses) directory name in d and opens it. Whatever
// non-directory is there goes, a symlink included: it is replaced by the
// directory, never followed.
func (r *treeRestorer) mkdir(d destDir, name, p string) (int, error) {
	for try := 0; ; try++ {
		if err := unix.Mkdirat(d.fd, name, 0o700); err != nil && !errors.Is(err, syscall.EEXIST) {
			return -1, destErr("mkdir", p, err)
		}
		fd, err := openDirAt(d.fd, name)
		if err == nil {
			return fd, nil
		}
		// ELOOP: a symlink; ENOTDIR: a file, fifo, device. Another
		// try only if someone keeps putting them back.
		if !errors.Is(err, syscall.ELOOP) && !errors.Is(err, syscall.ENOTDIR) || try == 3 {
			return -1, destErr("open directory", p, err)
		}
		if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, syscall.ENOENT) {
			return -1, destErr("remove", p, err)
		}
	}
}

// link makes name in d another name of the inode first restored at first
// (relative to the root).
func (r *treeRestorer) link(d destDir, name, p, first string) error {
	src, err := openBeneath(r.root, path.Dir(first))
	if err != nil {
		return destErr("open", filepath.Join(r.rootPath, path.Dir(first)), err)
	}
	defer unix.Close(src)
	base := path.Base(first)
	var want, got unix.Stat_t
	if err := unix.Fstatat(src, base, &want, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return destErr("stat", filepath.Join(r.rootPath, first), err)
	}
	if err := unix.Fstatat(d.fd, name, &got, unix.AT_SYMLINK_NOFOLLOW); err == nil && got.Dev == want.Dev && got.Ino == want.Ino {
		return nil // linked already (a rerun)
	}
	if ok, err := r.makeRoom(d, name, p, "hard link"); !ok {
		return err
	}
	// Without AT_SYMLINK_FOLLOW: a symlink put at first is linked
	// itself, not what it points to.
	if err := unix.Linkat(src, base, d.fd, name, 0); err != nil {
		return destErr("link", p, err)
	}
	return nil
}

// quickMatch is rsync's quick check: a regular file here with a's size
// and mtime is taken to hold a's data (a rerun resumes by it).
func quickMatch(st *unix.Stat_t, a layers.Attr) bool {
	return st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Size == a.Size && time.Unix(st.Mtim.Unix()).Equal(a.Mtime)
}

// file restores regular file a as name in d: keeps one already there
// (same size and mtime, and with checksum the same content), else writes
// a new file in its place. It counts the file unless it did neither.
func (r *treeRestorer) file(ctx context.Context, d destDir, name, p string, a layers.Attr) error {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	existed := err == nil
	wasFile := existed && st.Mode&syscall.S_IFMT == syscall.S_IFREG
	if quickMatch(&st, a) {
		kept, err := r.keep(ctx, d, name, p, a)
		if kept {
			r.files++
		}
		if kept || err != nil {
			return err
		}
	}
	if existed {
		// A new inode rather than the old one truncated: a hard link
		// planted in DEST must not carry the data elsewhere.
		if ok, err := r.makeRoom(d, name, p, "regular file"); !ok {
			return err
		}
	}
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return destErr("create", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if err := r.write(ctx, f, a, p); err != nil {
		f.Close()
		unix.Unlinkat(d.fd, name, 0)
		return err
	}
	r.files++
	if wasFile {
		r.rewritten++
	}
	r.noteLink(a, d, name)
	return r.meta(ctx, node{fd: fd, dir: d.fd, name: name, path: p}, a)
}

// keep checks a file already at name with a's size and mtime and, if it
// stays, applies a's metadata to it.
func (r *treeRestorer) keep(ctx context.Context, d destDir, name, p string, a layers.Attr) (kept bool, err error) {
	flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if r.checksum {
		// O_NONBLOCK: should a fifo have been put here since the
		// stat, opening it must not hang the restore.
		flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	}
	fd, err := unix.Openat(d.fd, name, flags, 0)
	if err != nil {
		return false, destErr("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, destErr("stat", p, err)
	}
	if !quickMatch(&st, a) {
		return false, nil // changed since the stat
	}
	// A hard link planted in DEST to a file elsewhere would take this
	// file's owner, mode and xattrs outside DEST; links the revision does
	// not have would stay. More links than the revision's, or (as root)
	// another owner, and the file is written anew.
	if st.Nlink > max(1, uint64(a.Nlink)) || os.Geteuid() == 0 && (st.Uid != a.Uid || st.Gid != a.Gid) {
		return false, nil
	}
	if r.checksum {
		same, err := r.sameContent(ctx, fd, a, p)
		var de *store.DamageError
		switch {
		case errors.As(err, &de):
			// The file here may be the good copy: it stays, unchecked.
			r.problem(p, problemError, fmt.Sprintf("%s: kept unchecked: the revision's copy cannot be read (%v)", p, err))
		case err != nil:
			return false, err
		case !same:
			return false, nil
		}
	}
	r.skipped++
	r.noteLink(a, d, name)
	return true, r.meta(ctx, node{fd: fd, opath: !r.checksum, dir: d.fd, name: name, path: p}, a)
}

// write copies a's data into f (new and empty), leaving holes as holes.
func (r *treeRestorer) write(ctx context.Context, f *os.File, a layers.Attr, p string) error {
	if err := f.Truncate(a.Size); err != nil {
		return destErr("size", p, err)
	}
	exts, err := r.t.Extents(ctx, a.Ino, 0, a.Size)
	if err != nil {
		return err
	}
	for _, e := range exts {
		if e.Hole {
			continue
		}
		err := r.readData(ctx, a.Ino, p, e.Off, e.Off+e.Len, func(b []byte, off int64) error {
			if _, err := f.WriteAt(b, off); err != nil {
				return destErr("write", p, err)
			}
			r.bytes += int64(len(b))
			r.report()
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *treeRestorer) report() {
	if r.progress != nil && time.Since(r.last) > 200*time.Millisecond {
		r.last = time.Now()
		// The entry count moves where bytes barely do: a tree of many
		// small or empty files sat at 0.0% for half a minute.
		r.progress(progress{Phase: "restore", Done: r.bytes + r.checked, Total: r.total, Unit: "bytes",
			Note: "(" + count(r.files, "file") + ")"})
	}
}

// sameContent compares the file open at fd (a's size) with a's data:
// holes of the revision must read as zeros there.
func (r *treeRestorer) sameContent(ctx context.Context, fd int, a layers.Attr, p string) (bool, error) {
	exts, err := r.t.Extents(ctx, a.Ino, 0, a.Size)
	if err != nil {
		return false, err
	}
	if r.here == nil {
		r.here, r.zero = make([]byte, 1<<20), make([]byte, 1<<20)
	}
	here := r.here
	// check compares the file here at off with want; errDiffers ends the
	// walk at the first difference.
	check := func(want []byte, off int64) error {
		if _, err := io.ReadFull(io.NewSectionReader(fdReaderAt(fd), off, int64(len(want))), here[:len(want)]); err != nil {
			return destErr("read", p, err)
		}
		if !bytes.Equal(here[:len(want)], want) {
			return errDiffers
		}
		r.checked += int64(len(want))
		r.report()
		return ctx.Err()
	}
	// holes checks that [off, end) reads as zeros here.
	holes := func(off, end int64) error {
		for off < end {
			n := min(int64(len(here)), end-off)
			if err := check(r.zero[:n], off); err != nil {
				return err
			}
			off += n
		}
		return nil
	}
	pos := int64(0)
	for _, e := range exts {
		if e.Hole {
			continue
		}
		if err := holes(pos, e.Off); err != nil {
			return sameOrErr(err)
		}
		if err := r.readData(ctx, a.Ino, p, e.Off, e.Off+e.Len, check); err != nil {
			return sameOrErr(err)
		}
		pos = e.Off + e.Len
	}
	return sameOrErr(holes(pos, a.Size))
}

// errDiffers: sameContent found a difference.
var errDiffers = errors.New("content differs")

// sameOrErr turns sameContent's walk error into its result.
func sameOrErr(err error) (bool, error) {
	if errors.Is(err, errDiffers) {
		return false, nil
	}
	return err == nil, err
}

// fdReaderAt reads a raw file descriptor with pread.
type fdReaderAt int

func (fd fdReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := unix.Pread(int(fd), p, off)
	if err != nil {
		return 0, err
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// meta applies owner, mode, xattrs and times to n (times last, since
// writing changes mtime). An xattr that cannot be set is a problem noted,
// not the end of the restore.
func (r *treeRestorer) meta(ctx context.Context, n node, a layers.Attr) error {
	link := a.Mode&syscall.S_IFMT == syscall.S_IFLNK
	// Not as root: files keep the restoring user, as with cp -a, and
	// then lose setuid and setgid, which were meant for the owner they
	// did not get (cp and tar do the same).
	mode := a.Mode & 0o7777
	if err := unix.Fchownat(n.fd, "", int(a.Uid), int(a.Gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if !errors.Is(err, syscall.EPERM) {
			return destErr("chown", n.path, err)
		}
		mode &^= 0o6000
	}
	if !link {
		if err := chmodNode(n, mode); err != nil {
			return destErr("chmod", n.path, err)
		}
	}
	// ACLs the revision does not have (inherited from a default ACL in
	// DEST, or left on a file kept) would grant what it did not.
	if names, err := r.t.ListXattr(ctx, a.Ino); err == nil {
		if !link {
			for _, x := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
				if !slices.Contains(names, x) {
					removexattrNode(n, x)
				}
			}
		}
		for _, x := range names {
			v, err := r.t.GetXattr(ctx, a.Ino, x)
			if err != nil {
				continue
			}
			err = setxattrNode(n, link, x, v)
			switch {
			case errors.Is(err, syscall.ENOTSUP) && strings.HasPrefix(x, "system.posix_acl_"):
				// The mode's group bits are the ACL's mask: without the
				// ACL they grant the owning group what it denied.
				r.problem(n.path, problemACL, fmt.Sprintf("%s: the destination filesystem takes no ACLs; the group bits are narrowed to keep what the ACL denied denied", n.path))
				if !link && a.Mode&0o070 != 0 {
					chmodNode(n, mode&^0o070)
				}
			case err == nil, errors.Is(err, syscall.ENOTSUP):
				// ENOTSUP: the filesystem takes no xattrs (of
				// this namespace) at all, as cp -a goes on.
			case errors.Is(err, syscall.EPERM):
				// trusted.* and security.* need privileges.
				r.problem(n.path, problemPermission, fmt.Sprintf("set xattr %s on %s: %v", x, n.path, err))
			case errors.Is(err, syscall.ENOSPC) && destFull(n.fd):
				// Not the value's size: the disk is full.
				return destErr("set xattr "+x+" on", n.path, err)
			case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.E2BIG), errors.Is(err, syscall.ERANGE):
				// ext4 says ENOSPC for a value beyond its inode's
				// (or one block's) room: not a full disk.
				said := err.Error()
				if errors.Is(err, syscall.ENOSPC) {
					said = fmt.Sprintf("it said %q, which here does not mean a full disk", said)
				}
				r.problem(n.path, problemXattr, fmt.Sprintf("set xattr %s on %s: its value of %s is larger than the destination filesystem supports (%s)", x, n.path, humanBytes(int64(len(v))), said))
			default:
				r.problem(n.path, problemXattr, fmt.Sprintf("set xattr %s on %s: %v", x, n.path, err))
			}
		}
	}
	// Not UnixNano: it overflows outside 1678-2262.
	ts := [2]unix.Timespec{{Sec: a.Atime.Unix(), Nsec: int64(a.Atime.Nanosecond())}, {Sec: a.Mtime.Unix(), Nsec: int64(a.Mtime.Nanosecond())}}
	if err := timesNode(n, link, &ts); err != nil {
		return destErr("set times on", n.path, err)
	}
	return nil
}
