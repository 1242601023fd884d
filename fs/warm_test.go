package fs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
)

// warmTree makes dirs directories of files files each, with a symlink in
// every directory.
func warmTree(t *testing.T, dir string, dirs, files int) {
	t.Helper()
	for d := range dirs {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", f)), []byte(sub), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("f0", filepath.Join(sub, "link")); err != nil {
			t.Fatal(err)
		}
	}
}

// reset forgets the requests counted so far.
func (c *opCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n, c.d = map[string]int{}, map[string]time.Duration{}
}

func (c *opCounter) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[op]
}

// coldStaging mounts a staging volume holding a copy of src, with the
// warmer on or off, then drops the kernel's caches; c counts the
// requests from then on.
func coldStaging(t *testing.T, src string, noWarm bool) (m *Mount, mnt string, c *opCounter) {
	t.Helper()
	c = newOpCounter()
	m, mnt = mountStagingOpts(t, "w", func(r *layers.Repo) Options {
		opts := c.options(r)
		opts.NoWarm = noWarm
		return opts
	})
	run(t, "rsync", "-a", src+"/", mnt+"/")
	// The root was listed as rsync began; it is listed again only that
	// long after.
	time.Sleep(rewarmAfter)
	dropCaches(t)
	c.reset()
	return m, mnt, c
}

// TestWarmerAnswersLookupsAhead: after the kernel dropped its caches, a
// no-change rsync into staging finds most destination entries already
// in the kernel's cache, listed by the warmer, instead of looking each
// up; and it still finds nothing to transfer.
func TestWarmerAnswersLookupsAhead(t *testing.T) {
	src := t.TempDir()
	warmTree(t, src, 40, 25)
	lookups := map[bool]int{}
	for _, noWarm := range []bool{true, false} {
		_, mnt, c := coldStaging(t, src, noWarm)
		if out := run(t, "rsync", "-a", "--itemize-changes", src+"/", mnt+"/"); out != "" {
			t.Fatalf("no-change rsync (noWarm %v) transferred:\n%s", noWarm, out)
		}
		lookups[noWarm] = c.count("LOOKUP")
		if out := run(t, "rsync", "-an", "--checksum", "--itemize-changes", src+"/", mnt+"/"); out != "" {
			t.Fatalf("staging (noWarm %v) differs from its source:\n%s", noWarm, out)
		}
	}
	t.Logf("LOOKUPs of a no-change rsync of 1,081 entries: %d without the warmer, %d with", lookups[true], lookups[false])
	if lookups[true] < 1000 {
		t.Fatalf("without the warmer rsync looked up only %d entries: the caches were not dropped", lookups[true])
	}
	if lookups[false] > lookups[true]/2 {
		t.Fatalf("with the warmer rsync still looked up %d of %d entries", lookups[false], lookups[true])
	}
}

// TestWarmerStopsWithReader: the warmer lists ahead only while the
// process whose lookup started it runs, so it does not list a large tree
// into the kernel for one stat, and a umount(8) right after the reader
// finished does not find the mount busy.
func TestWarmerStopsWithReader(t *testing.T) {
	src := t.TempDir()
	warmTree(t, src, 300, 2)
	_, mnt, c := coldStaging(t, src, false)
	run(t, "stat", filepath.Join(mnt, "d000", "f0"))
	time.Sleep(500 * time.Millisecond)
	if n := c.count("OPENDIR"); n > 150 {
		t.Fatalf("one stat made the warmer list %d of 301 directories", n)
	}
	if err := unmountNow(mnt); err != nil {
		t.Fatalf("umount after the reader exited: %v", err)
	}
}

// unmountNow is umount(8) of dir, retried only while the kernel still
// holds the files of processes that exited.
func unmountNow(dir string) error {
	var err error
	for range 10 {
		if err = exec.Command("umount", dir).Run(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// TestWarmerUnmountWhileListing: Mount.Unmount stops the warmer before
// unmounting, so directories it has open do not make it fail.
func TestWarmerUnmountWhileListing(t *testing.T) {
	src := t.TempDir()
	warmTree(t, src, 300, 2)
	m, mnt, c := coldStaging(t, src, false)
	// A reader that stays alive keeps the warmer going: the shell opens
	// the file itself, then waits.
	reader := exec.Command("sh", "-c", ": <"+filepath.Join(mnt, "d000", "f0")+"; sleep 5")
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reader.Process.Kill(); _ = reader.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for c.count("OPENDIR") < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the warmer never started listing")
		}
		time.Sleep(time.Millisecond)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("unmount while the warmer lists: %v", err)
	}
}

// TestOwnThread: the warmer's own lookups must not count as a reader's
// (a reader that is this process would never exit).
func TestOwnThread(t *testing.T) {
	child := exec.Command("sleep", "5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	for _, tc := range []struct {
		name string
		pid  int
		want bool
	}{
		{"this thread", unix.Gettid(), true},
		{"this process", os.Getpid(), true},
		{"a child process", child.Process.Pid, false},
	} {
		if got := ownThread(uint32(tc.pid)); got != tc.want {
			t.Errorf("%s (%d): ownThread %v, want %v", tc.name, tc.pid, got, tc.want)
		}
	}
	// A lookup from this process never becomes the reader.
	var w warmer
	if !w.readerLocked(uint32(child.Process.Pid)) || w.readers[0] != uint32(child.Process.Pid) {
		t.Fatalf("the child was not taken as the reader: %v", w.readers)
	}
	if w.readerLocked(uint32(unix.Gettid())) || w.readers[0] != uint32(child.Process.Pid) {
		t.Fatalf("this thread was taken as the reader: %v", w.readers)
	}
}
