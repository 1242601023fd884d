package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Restoring below DEST goes through directory file descriptors and *at
// calls that never follow a symlink: a symlink in DEST, planted before the
// restore or during it, is an entry to replace, not a way out of DEST (as
// with rsync and GNU tar). The helpers here are those calls.

// destDir is a directory of the destination, held open.
type destDir struct {
	fd   int    // opened O_DIRECTORY|O_NOFOLLOW (DEST itself: as the user named it)
	path string // full path, for messages
	rel  string // path relative to the restore's root ("" for the root)
}

// node is a restored entry whose metadata is to be set, through fd and never
// by a path that could lead elsewhere.
type node struct {
	fd int
	// opath: fd is O_PATH (devices, fifos, symlinks, files kept unread),
	// which the f* calls refuse; /proc/self/fd/N reaches its inode.
	opath bool
	// dir and name: where a symlink is, for the calls that have no form
	// taking a symlink's fd (lsetxattr, utimensat without following).
	dir  int
	name string
	path string // for messages
}

// destError is a failed operation on the destination, as opposed to one
// reading the repository: the restore notes it and goes on with the next
// entry, unless the destination is full or read-only (fatalDest).
type destError struct {
	op, path string
	err      error
}

func (e *destError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *destError) Unwrap() error { return e.err }

func destErr(op, p string, err error) error {
	return &destError{op: op, path: p, err: bareErr(err)}
}

// fatalDest tells whether a destination error stops the whole restore: on a
// full or read-only filesystem every later entry would fail as well.
func fatalDest(err error) bool { return destHint(err) != "" }

// destHint says what to do about a destination that is full or read-only
// ("" for any other error). The generic ENOSPC hint in report is about the
// repository's filesystems, so these errors must not reach it wrapped.
func destHint(err error) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return "the destination is read-only: remount it read-write or restore elsewhere"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the destination filesystem is full (or the quota reached): free space there or restore elsewhere"
	}
	return ""
}

// destFull tells whether the filesystem holding fd has no block left for
// this process (root may use the reserved ones): ext4's ENOSPC for an
// xattr then means a full disk, not a value too large.
func destFull(fd int) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false
	}
	free := st.Bavail
	if os.Geteuid() == 0 {
		free = st.Bfree
	}
	return free == 0
}

// procFD names fd's inode for the calls that take only a path: the magic
// link resolves to the open inode itself, whatever its name now leads to
// (glibc's fchmodat(AT_SYMLINK_NOFOLLOW) works the same way).
func procFD(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// openDirAt opens directory name in d without following a symlink there.
func openDirAt(d int, name string) (int, error) {
	return unix.Openat(d, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// openBeneath opens the directory at rel below root (a path with
// components separated by '/'), following no symlink on the way.
func openBeneath(root int, rel string) (int, error) {
	fd, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." {
			continue
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", c, err)
		}
		fd = next
	}
	return fd, nil
}

// removeAt removes name from d so that something of another type can take
// its place. An empty directory goes too; a non-empty one does not, and
// removeAt returns errNotEmpty: it is user data the restore must not delete.
func removeAt(d int, name string) error {
	err := unix.Unlinkat(d, name, 0)
	if errors.Is(err, syscall.EISDIR) {
		err = unix.Unlinkat(d, name, unix.AT_REMOVEDIR)
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return errNotEmpty
		}
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// errNotEmpty: removeAt found a non-empty directory and left it.
var errNotEmpty = errors.New("directory not empty")

// chmodNode sets n's permission bits (not for symlinks, which have none).
func chmodNode(n node, mode uint32) error {
	if n.opath {
		return unix.Chmod(procFD(n.fd), mode)
	}
	return unix.Fchmod(n.fd, mode)
}

// setxattrNode sets one extended attribute on n.
func setxattrNode(n node, link bool, name string, v []byte) error {
	switch {
	case link:
		// lsetxattr acts on the last component without following it;
		// the directory before it is ours, reached through its fd.
		return unix.Lsetxattr(procFD(n.dir)+"/"+n.name, name, v, 0)
	case n.opath:
		return unix.Setxattr(procFD(n.fd), name, v, 0)
	}
	return unix.Fsetxattr(n.fd, name, v, 0)
}

// removexattrNode removes one extended attribute from n, if it has it.
func removexattrNode(n node, name string) {
	if n.opath {
		unix.Removexattr(procFD(n.fd), name)
		return
	}
	unix.Fremovexattr(n.fd, name)
}

// timesNode sets n's access and modification times.
func timesNode(n node, link bool, ts *[2]unix.Timespec) error {
	switch {
	case link:
		// On the opened symlink itself (AT_EMPTY_PATH on its O_PATH
		// fd, Linux 5.8+), not on whatever holds its name by now.
		err := unix.UtimesNanoAt(n.fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		return unix.UtimesNanoAt(n.dir, n.name, ts[:], unix.AT_SYMLINK_NOFOLLOW)
	case n.opath:
		return unix.UtimesNanoAt(unix.AT_FDCWD, procFD(n.fd), ts[:], 0)
	}
	// futimens(3): utimensat with a NULL path acts on the fd, which the
	// Go wrapper (taking a string) cannot express.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(n.fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// relJoin joins a root-relative directory and a name.
func relJoin(dir, name string) string {
	if dir == "" {
		return name
	}
	return path.Join(dir, name)
}
