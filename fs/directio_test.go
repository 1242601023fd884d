package fs

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Writable handles on staging are direct I/O (treeFS.Create); these tests
// pin down what the page cache used to give for free.

// mmapChildEnv names the file TestStagingMmapSharedChild writes through a
// mapping. The mapping must be touched by another process: a page fault
// on this process's own mount cannot be stopped for the garbage
// collector, whose stop-the-world then waits for it while the server's
// goroutine that would answer the fault waits for the collector (seen
// once: the fs tests hung until their 20-minute timeout).
const mmapChildEnv = "STRATA_FS_MMAP_CHILD"

// mmapPattern is what the child writes and the parent expects.
func mmapPattern() []byte {
	const size = 3*4096 + 100
	return bytes.Repeat([]byte("strata-mmap!"), size/12+1)[:size]
}

// TestStagingMmapSharedChild (the child of TestStagingMmapShared):
// truncate the file, map it shared and writable, copy the pattern in,
// msync, unmap, close.
func TestStagingMmapSharedChild(t *testing.T) {
	p := os.Getenv(mmapChildEnv)
	if p == "" {
		return // only runs as the child of TestStagingMmapShared
	}
	want := mmapPattern()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap MAP_SHARED of a writable staging file: %v", err)
	}
	copy(b, want)
	if err := unix.Msync(b, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStagingMmapShared writes a file through a shared writable mapping
// (in a child process, see mmapChildEnv) and reads it back through a new
// descriptor.
func TestStagingMmapShared(t *testing.T) {
	if os.Getenv(mmapChildEnv) != "" {
		return
	}
	dir := mountTestStaging(t, "mmap", false)
	p := filepath.Join(dir, "f")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestStagingMmapSharedChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), mmapChildEnv+"="+p)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child writing through the mapping: %v\n%s", err, out)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mmapPattern()) {
		t.Fatalf("read back %d bytes, differs from what was written through the mapping", len(got))
	}
}

// TestWriteDropsPrivileges: a write removes file capabilities (any
// writer) and set-user-ID / set-group-ID bits (a writer without
// CAP_FSETID), as on a local filesystem.
func TestWriteDropsPrivileges(t *testing.T) {
	dir := mountTestStaging(t, "privs", true) // the set-ID case writes as nobody
	openToOthers(t, dir)

	// A valid VFS_CAP_REVISION_2 value: cap_net_raw permitted+effective.
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000000|1)
	binary.LittleEndian.PutUint32(capv[4:], 1<<13)
	tests := []struct {
		name     string
		mode     os.FileMode
		capable  bool // set security.capability first
		asNobody bool
		wantMode os.FileMode
		wantCap  bool
	}{
		{"capability, root writes", 0o755, true, false, 0o755, false},
		{"setuid, root keeps it", 0o4755 | os.ModeSetuid, false, false, 0o755 | os.ModeSetuid, false},
		{"setuid+setgid, nobody writes", 0o777 | os.ModeSetuid | os.ModeSetgid, false, true, 0o777, false},
		{"setgid without group exec stays", 0o766 | os.ModeSetgid, false, true, 0o766 | os.ModeSetgid, false},
		{"plain file", 0o644, false, false, 0o644, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "f"+string(rune('a'+i)))
			if err := os.WriteFile(p, []byte("before"), 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.capable {
				if err := unix.Setxattr(p, capabilityXattr, capv, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.asNobody {
				out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
					"sh", "-c", "printf after >> "+p).CombinedOutput()
				if err != nil {
					t.Fatalf("write as nobody: %v: %s", err, out)
				}
			} else {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString("after"); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			var sx unix.Stat_t
			if err := unix.Stat(p, &sx); err != nil {
				t.Fatal(err)
			}
			got := os.FileMode(sx.Mode & 0o777)
			if sx.Mode&syscall.S_ISUID != 0 {
				got |= os.ModeSetuid
			}
			if sx.Mode&syscall.S_ISGID != 0 {
				got |= os.ModeSetgid
			}
			if got != tc.wantMode {
				t.Errorf("mode after write = %v, want %v", got, tc.wantMode)
			}
			_, err := unix.Getxattr(p, capabilityXattr, make([]byte, 64))
			if hasCap := err == nil; hasCap != tc.wantCap {
				t.Errorf("security.capability present after write = %v (%v), want %v", hasCap, err, tc.wantCap)
			}
			data, err := os.ReadFile(p)
			if err != nil || string(data) != "beforeafter" {
				t.Errorf("content = %q, %v", data, err)
			}
		})
	}
}

// TestWriteDropsPrivilegesAddedWhileOpen: capabilities set on a file
// after a write through an open descriptor are still dropped by the next
// write through it (writes skip the check only while nothing was added).
func TestWriteDropsPrivilegesAddedWhileOpen(t *testing.T) {
	dir := mountTestStaging(t, "privs2", false)
	p := filepath.Join(dir, "f")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("one"); err != nil {
		t.Fatal(err)
	}
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000000|1)
	binary.LittleEndian.PutUint32(capv[4:], 1<<13)
	if err := unix.Setxattr(p, capabilityXattr, capv, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("two"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, capabilityXattr, make([]byte, 64)); err == nil {
		t.Error("security.capability set while the file was open survived a write through it")
	}
}

// openToOthers lets other users reach mnt (mode 0777) through the test's
// temporary directories.
func openToOthers(t *testing.T, mnt string) {
	t.Helper()
	for d := filepath.Dir(mnt); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
}
