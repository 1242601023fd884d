package fs

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
)

func TestErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{layers.ErrNotFound, syscall.ENOENT},
		{fmt.Errorf("lookup %q: %w", "x", layers.ErrNotFound), syscall.ENOENT},
		{layers.ErrExists, syscall.EEXIST},
		{layers.ErrNotDir, syscall.ENOTDIR},
		{layers.ErrIsDir, syscall.EISDIR},
		{layers.ErrNotEmpty, syscall.ENOTEMPTY},
		{fmt.Errorf("write: %w", layers.ErrReadOnly), syscall.EROFS},
		{layers.ErrNoSpace, syscall.ENOSPC},
		{fmt.Errorf("spool: %w", syscall.ENOSPC), syscall.ENOSPC},
		{layers.ErrInvalid, syscall.EINVAL},
		{layers.ErrNoXattr, syscall.ENODATA},
		{layers.ErrNameTooLong, syscall.ENAMETOOLONG},
		{layers.ErrRange, syscall.ERANGE},
		{fmt.Errorf("read: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("segment 3: %w", os.ErrClosed), syscall.EIO},
	}
	for _, tt := range tests {
		if got := Errno(tt.err); got != tt.want {
			t.Errorf("Errno(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestMountpointRefused(t *testing.T) {
	r := testRepo(t)
	st := testStaging(t, r, "v")
	ctx := context.Background()

	missing := filepath.Join(t.TempDir(), "nope")
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(full, "x")
	// An empty live mount: mounting over it would hide it.
	live := mountDir(t)
	lm, err := MountStaging(ctx, live, testStaging(t, r, "w"), testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, lm)
	for _, dir := range []string{missing, full, file, live} {
		m, err := MountStaging(ctx, dir, st, testOpts(t, r))
		if err == nil {
			m.Unmount()
			t.Errorf("MountStaging(%s) succeeded, want ErrMountpoint", dir)
			continue
		}
		if !strings.Contains(err.Error(), dir) || !errors.Is(err, ErrMountpoint) {
			t.Errorf("error %q does not name %s or is not ErrMountpoint", err, dir)
		}
	}
}

// TestStaleMountCleared mounts, abandons the server as a SIGKILL would
// (the mount stays, the FUSE fd is gone) and mounts again on top.
func TestStaleMountCleared(t *testing.T) {
	dir := mountDir(t)
	// A FUSE mount whose fd is closed right away is exactly the state a
	// killed server leaves: "Transport endpoint is not connected".
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := syscall.Mount("strata", dir, "fuse.strata", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		syscall.Close(fd)
		t.Fatalf("mount: %v", err)
	}
	syscall.Close(fd)
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if _, err := os.Stat(dir); !isErrno(err, syscall.ENOTCONN) {
		t.Fatalf("stat of dead mount: %v, want ENOTCONN", err)
	}

	r := testRepo(t)
	st := testStaging(t, r, "v")
	m, err := MountStaging(context.Background(), dir, st, testOpts(t, r))
	if err != nil {
		t.Fatalf("mount over stale mount: %v", err)
	}
	unmountOnCleanup(t, m)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// posixNotApplicable lists posixtest cases that test what strata does
// not promise, with the reason.
var posixNotApplicable = map[string]string{
	// POSIX record locks belong to the process: two descriptors of one
	// process never conflict on any filesystem. go-fuse skips it too.
	"FcntlFlockLocksFile": "POSIX locks of one process never conflict (go-fuse's own suite skips it)",
}

func TestPosix(t *testing.T) {
	_, _, _, dir := stagingMount(t, "posix")
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixNotApplicable[name]; ok {
				t.Skip(why)
			}
			sub := filepath.Join(dir, name)
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			fn(t, sub)
		})
	}
}

// TestReadDirStream lists a large directory through a read-only mount in
// small getdents batches, checking order, completeness and seekdir.
func TestReadDirStream(t *testing.T) {
	r := testRepo(t)
	st := testStaging(t, r, "big")
	ctx := context.Background()
	const n = 5000
	d, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := st.Create(ctx, d.Ino, fmt.Sprintf("file-%05d-%s", i, strings.Repeat("x", i%50)), syscall.S_IFREG|0o644, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The staging head's read view, mounted read-only: the same ReadDir
	// as a revision's (TestRsyncRoundTrip mounts real revisions).
	dir := mountDir(t)
	m, err := MountTree(ctx, dir, st.Tree(), testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)

	// Small buffers: the kernel consumes our replies partially.
	fd, err := unix.Open(filepath.Join(dir, "d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	offs := map[string]int64{}
	buf := make([]byte, 300)
	for {
		k, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
		for b := buf[:k]; len(b) > 0; {
			reclen := int(b[16]) | int(b[17])<<8
			off := int64(b[8]) | int64(b[9])<<8 | int64(b[10])<<16 | int64(b[11])<<24
			name := unix.ByteSliceToString(b[19:reclen])
			if name != "." && name != ".." {
				names = append(names, name)
				offs[name] = off
			}
			b = b[reclen:]
		}
	}
	if len(names) != n {
		t.Fatalf("listed %d entries, want %d", len(names), n)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("entries out of order: %q then %q", names[i-1], names[i])
		}
	}
	// seekdir to the offset after entry k: the next entry is k+1.
	rnd := rand.New(rand.NewSource(1))
	for range 5 {
		k := rnd.Intn(n - 1)
		if _, err := unix.Seek(fd, offs[names[k]], 0); err != nil {
			t.Fatal(err)
		}
		m, err := unix.Getdents(fd, buf)
		if err != nil || m == 0 {
			t.Fatalf("getdents after seek: %d, %v", m, err)
		}
		reclen := int(buf[16]) | int(buf[17])<<8
		if got := unix.ByteSliceToString(buf[19:reclen]); got != names[k+1] {
			t.Errorf("after seek to %q: got %q, want %q", names[k], got, names[k+1])
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d", names[n/2])); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "new"), nil, 0o644); !isErrno(err, syscall.EROFS) {
		t.Errorf("create in revision: %v, want EROFS", err)
	}
}

var _ = time.Second

func TestStatFS(t *testing.T) {
	r := testRepo(t)
	st := testStaging(t, r, "v")
	ctx := context.Background()
	want, err := r.StatFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := mountDir(t)
	m, err := MountStaging(ctx, dir, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	var got unix.Statfs_t
	if err := unix.Statfs(dir, &got); err != nil {
		t.Fatal(err)
	}
	if want.TotalBytes == 0 {
		t.Fatalf("repository reports zero capacity: %+v", want)
	}
	if total := got.Blocks * uint64(got.Bsize); total != want.TotalBytes/4096*4096 {
		t.Errorf("statfs total %d bytes, repository %d", total, want.TotalBytes)
	}
	if got.Namelen != 255 {
		t.Errorf("name length %d", got.Namelen)
	}
}

func TestRenameFlags(t *testing.T) {
	_, _, _, dir := stagingMount(t, "v")
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE); !isErrno(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE over existing: %v, want EEXIST", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	for p, want := range map[string]string{a: "B", b: "A"} {
		if got, err := os.ReadFile(p); err != nil || string(got) != want {
			t.Errorf("after exchange %s = %q, %v; want %q", p, got, err, want)
		}
	}
	c := filepath.Join(dir, "c")
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE to a new name: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, c, unix.AT_FDCWD, b, unix.RENAME_WHITEOUT); err == nil {
		t.Error("RENAME_WHITEOUT succeeded")
	}
}

// TestExternalUmount: a plain umount(8) ends the mount, Wait returns
// after the final flush, and what was written is in staging.
func TestExternalUmount(t *testing.T) {
	r := testRepo(t)
	st := testStaging(t, r, "v")
	ctx := context.Background()
	dir := mountDir(t)
	m, err := MountStaging(ctx, dir, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "umount", dir)
	m.Wait()
	if err := m.Err(); err != nil {
		t.Errorf("final flush: %v", err)
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount after umount(8): %v", err)
	}
	a, err := st.Tree().Lookup(ctx, layers.RootIno, "f")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, _ := st.Tree().ReadAt(ctx, a.Ino, buf, 0)
	if string(buf[:n]) != "kept" {
		t.Errorf("staging has %q after umount", buf[:n])
	}
}
