package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/strata-backup/strata/fs"
)

// A server killed (kill -9, the OOM killer, a crash) leaves its mounts in
// the kernel's mount table: every access to them fails with "Transport
// endpoint is not connected" until they are unmounted. Its mounts carry
// the repository's path as their source (mountSource), so status and
// umount can find those of this repository and tell them from other
// strata mounts. A restarted server does not clear them by itself: a dead
// mount fails loudly, while an unmounted one is an empty local directory
// that a backup script's rsync would fill in silence, on the wrong disk.

// mountSource is the source of the mounts of repository dir in the mount
// table (fs.Options.Source, what df shows): "strata:" and the
// repository's path, symlinks resolved, so that servers started through
// different spellings of the path agree.
func mountSource(dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return "strata:" + dir
}

// deadMountInfo is a mount of this repository whose server is gone.
type deadMountInfo struct {
	Mountpoint string `json:"mountpoint"`
	ReadOnly   bool   `json:"read_only"`
}

// deadMounts lists the mounts of repository dir that lost their server.
// served tells the mountpoints this process serves: those are not probed,
// since an access to its own mount could wait on this very process.
// Best effort: an unreadable mount table lists none.
func deadMounts(dir string, served func(mountpoint string) bool) []deadMountInfo {
	table, err := fs.Table()
	if err != nil {
		return nil
	}
	src := mountSource(dir)
	seen := map[string]bool{}
	var out []deadMountInfo
	for _, m := range table {
		if m.Source != src || seen[m.Dir] || served(m.Dir) {
			continue
		}
		seen[m.Dir] = true
		// A mount being set up by this server right now answers; only
		// one whose connection is gone is dead.
		if fs.Disconnected(m.Dir) {
			out = append(out, deadMountInfo{Mountpoint: m.Dir, ReadOnly: m.ReadOnly})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

// resolveMountpoint resolves symlinks in the directory holding mp, as the
// mount table names mount points; mp itself is not touched (a dead
// mount's root fails every access).
func resolveMountpoint(mp string) string {
	if parent, err := filepath.EvalSymlinks(filepath.Dir(mp)); err == nil {
		return filepath.Join(parent, filepath.Base(mp))
	}
	return mp
}

// umountResult is what strata umount did.
type umountResult struct {
	Mountpoint string `json:"mountpoint"`
	// Dead: the mount's server had stopped; the mount was cleared.
	Dead bool `json:"dead,omitempty"`
	// Detached: something still held the dead mount, so it was detached
	// (MNT_DETACH): gone from the tree now, released by the kernel once
	// the last process lets go of it.
	Detached bool `json:"detached,omitempty"`
	// Uncommitted: the mount was a staging whose changes since then are
	// in no revision yet (a user from restic may take umount for done).
	Volume      string    `json:"volume,omitempty"`
	Uncommitted time.Time `json:"uncommitted_since,omitzero"`
}

// clearDeadMount unmounts mp if it is a mount of repository dir whose
// server is gone, and refuses anything else, saying what mp is.
func clearDeadMount(dir, mp string) (umountResult, error) {
	real := resolveMountpoint(mp)
	fstype, source, err := fs.TableType(real)
	if err != nil {
		return umountResult{}, err
	}
	ours := mountSource(dir)
	switch other, isStrata := strings.CutPrefix(source, "strata:"); {
	case fstype == "":
		return umountResult{}, fail(exitError, "'strata status' lists the mounts of this repository",
			"%s is not a mount point", mp)
	case fstype != "fuse.strata":
		return umountResult{}, fail(exitError, "strata umount unmounts only the mounts of this repository",
			"%s is not a strata mount (its filesystem type is %s)", mp, fstype)
	case source == ours:
	case isStrata && other != "":
		return umountResult{}, fail(exitError, "use 'strata --repo "+other+" umount "+mp+"'",
			"%s is a strata mount of repository %s, not of %s", mp, other, dir)
	default:
		return umountResult{}, fail(exitError, "if its server is gone, 'umount "+mp+"' clears it",
			"%s is a strata mount that does not name its repository (made by an older strata)", mp)
	}
	if !fs.Disconnected(real) {
		return umountResult{}, fail(exitError, "if it is being mounted right now, try again once that is done",
			"%s is a live strata mount of this repository that this server does not serve", mp)
	}
	res := umountResult{Mountpoint: mp, Dead: true}
	if err := syscall.Unmount(real, 0); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return umountResult{}, fmt.Errorf("unmount dead mount %s: %w", mp, err)
		}
		// A process still has its working directory or a file there;
		// nothing in it can be read anyway.
		if err := syscall.Unmount(real, syscall.MNT_DETACH); err != nil {
			return umountResult{}, fmt.Errorf("detach dead mount %s: %w", mp, err)
		}
		res.Detached = true
	}
	return res, nil
}
