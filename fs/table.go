package fs

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// TableMount is a strata FUSE mount as this process's mount table lists
// it. The table outlives the server that served a mount: after a crash
// or kill -9 it still lists the mount, whose every access then fails.
type TableMount struct {
	Dir      string // the mount point
	Source   string // Options.Source it was mounted with
	ReadOnly bool
}

// strataType is the filesystem type of every strata mount in the mount
// table: "fuse." and the Name of the mount options.
const strataType = "fuse.strata"

// Table lists the strata FUSE mounts of this process's mount namespace,
// from /proc/self/mountinfo alone: nothing on a mount is touched, since
// its server may be gone (or be the caller).
func Table() ([]TableMount, error) {
	ents, err := readMountTable()
	if err != nil {
		return nil, err
	}
	var out []TableMount
	for _, e := range ents {
		if e.fstype == strataType {
			out = append(out, TableMount{Dir: e.point, Source: e.source, ReadOnly: e.readOnly})
		}
	}
	return out, nil
}

// TableType returns the filesystem type and source of what is mounted at
// the absolute path dir, from the mount table ("" if nothing is): the
// top one of mounts stacked there.
func TableType(dir string) (fstype, source string, err error) {
	ents, err := readMountTable()
	if err != nil {
		return "", "", err
	}
	for _, e := range ents {
		if e.point == dir {
			fstype, source = e.fstype, e.source
		}
	}
	return fstype, source, nil
}

// Disconnected reports whether the FUSE mount at dir has lost its server:
// a statfs(2), which the kernel never answers from a cache, fails with
// ENOTCONN (the server died and its connection closed) or ECONNABORTED
// (the connection was aborted, as the server's guard does). It sends a
// request to the mount, so it must not be used on a mount the caller
// serves while it could block that mount's serving.
// A live server that does not answer (stopped with SIGSTOP, hung) would
// hold the caller as long: after disconnectedWait the mount counts as
// live, and the probe is left to return whenever it does.
func Disconnected(dir string) bool {
	answer := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		answer <- syscall.Statfs(dir, &st)
	}()
	select {
	case err := <-answer:
		return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
	case <-time.After(disconnectedWait):
		return false
	}
}

// disconnectedWait bounds Disconnected's probe; a dead mount answers at once.
const disconnectedWait = 3 * time.Second

// mountEntry is one line of the mount table.
type mountEntry struct {
	point    string // mount point
	fstype   string // "fuse.strata", "ext4", ...
	source   string // the device or, for FUSE, its fsname
	readOnly bool   // the per-mount flags say ro
	dev      devNum // the mounted filesystem's device number
	hasDev   bool   // dev parsed
}

// readMountTable parses /proc/self/mountinfo, in mount order (of mounts
// stacked on one point the last is on top).
func readMountTable() ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		// Field 3 is the device (major:minor), field 5 the mount point
		// and field 6 the per-mount options; after the " - " separator come the filesystem
		// type and the source. Space, tab, newline and backslash are
		// octal-escaped.
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		rest := strings.Fields(line[sep+3:])
		if len(rest) < 2 {
			continue
		}
		e := mountEntry{
			point:    unescapeMountinfo(f[4]),
			fstype:   rest[0],
			source:   unescapeMountinfo(rest[1]),
			readOnly: slices.Contains(strings.Split(f[5], ","), "ro"),
		}
		_, err := fmt.Sscanf(f[2], "%d:%d", &e.dev.major, &e.dev.minor)
		e.hasDev = err == nil
		out = append(out, e)
	}
	return out, nil
}
