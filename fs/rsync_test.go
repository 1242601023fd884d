package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
)

// bigOff is where the >4 GiB sparse file has data; its size is bigSize.
const (
	bigOff  = 4<<30 + 12345
	bigSize = 4<<30 + 1<<20
)

// craftTree builds what rsync -aHAXS must carry: hard links, symlinks
// (dangling too), fifos, device nodes, a socket, xattrs, ACLs, sparse and
// empty files, unicode and 255-byte names, deep paths, odd owners and
// nanosecond times. The >4 GiB sparse file goes in bigDir, compared
// separately (checksumming 4 GiB of zeros twice would dominate the test).
func craftTree(t *testing.T, dir, bigDir string) {
	t.Helper()
	rnd := rand.New(rand.NewSource(42))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		b := make([]byte, n)
		rnd.Read(b)
		must(os.WriteFile(p, b, 0o644))
		return p
	}
	write("small", 100)
	write("medium", 300<<10)
	write("large", 3<<20+17)
	write("empty", 0)
	write("sub/inner", 5000)
	must(os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "small.link")))
	must(os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "sub", "small.link2")))
	must(os.Symlink("small", filepath.Join(dir, "sym")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "dangling")))
	must(os.Symlink(strings.Repeat("t", 1000), filepath.Join(dir, "longtarget")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(syscall.Mknod(filepath.Join(dir, "blk"), syscall.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
	must(syscall.Mknod(filepath.Join(dir, "sock"), syscall.S_IFSOCK|0o755, 0))

	// Sparse: data, 10 MiB hole, data, trailing hole.
	sp, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	_, err = sp.WriteAt(bytes.Repeat([]byte("a"), 5000), 0)
	must(err)
	_, err = sp.WriteAt(bytes.Repeat([]byte("b"), 5000), 10<<20)
	must(err)
	must(sp.Truncate(20 << 20))
	must(sp.Close())

	write("ünïcødé/日本語のファイル名", 77)
	write(strings.Repeat("n", 255), 10)
	write("x/"+strings.Repeat("é", 127)+"a", 10) // 255 bytes of UTF-8
	deep := dir
	for i := range 30 {
		deep = filepath.Join(deep, fmt.Sprintf("level%02d", i))
	}
	must(os.MkdirAll(deep, 0o750))
	must(os.WriteFile(filepath.Join(deep, "bottom"), []byte("deep"), 0o600))

	// Owners, modes, xattrs, ACLs.
	must(os.Lchown(filepath.Join(dir, "medium"), 1234, 5678))
	must(os.Lchown(filepath.Join(dir, "sym"), 4321, 8765))
	must(os.Chmod(filepath.Join(dir, "large"), 0o4755))
	must(os.Chmod(filepath.Join(dir, "sub"), 0o1777))
	must(unix.Setxattr(filepath.Join(dir, "small"), "user.note", []byte("hello"), 0))
	must(unix.Setxattr(filepath.Join(dir, "small"), "user.empty", nil, 0))
	must(unix.Setxattr(filepath.Join(dir, "sub"), "user.bin", []byte{0, 1, 2, 255}, 0))
	must(unix.Setxattr(filepath.Join(dir, "medium"), "trusted.t", bytes.Repeat([]byte("v"), 3000), 0))
	run(t, "setfacl", "-m", "u:1234:rwx,g:99:r-x,m::rwx", filepath.Join(dir, "medium"))
	run(t, "setfacl", "-d", "-m", "u:1234:rwx", filepath.Join(dir, "sub"))

	// Nanosecond times, set last (children change directory mtimes).
	ts := []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1700000000, Nsec: 987654321}}
	must(filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// makeBig makes dir/big, a sparse file past 4 GiB with a little data at
// bigOff, with child processes (they may write into our own mount). rsync
// is not used for it: reading 4 GiB of holes takes rsync 3.5 over a
// minute even between plain directories on this machine.
func makeBig(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "big")
	run(t, "truncate", "-s", fmt.Sprint(bigSize), p)
	run(t, "sh", "-c", fmt.Sprintf("printf 'past four gibibytes' | dd of=%s bs=1 seek=%d conv=notrunc status=none", p, int64(bigOff)))
	run(t, "touch", "-d", "@1650000000.123456789", p, dir)
}

// rsyncDiff returns rsync's itemized differences between src and dst;
// empty means identical. checksum compares content, not just size+mtime.
func rsyncDiff(t *testing.T, src, dst string, checksum bool) string {
	t.Helper()
	// bigdir holds the >4 GiB file, checked by checkBig instead.
	args := []string{"-naHAXS", "--numeric-ids", "--itemize-changes", "--delete", "--exclude=/bigdir"}
	if checksum {
		args = append(args, "--checksum")
	}
	return run(t, "rsync", append(args, src+"/", dst+"/")...)
}

// checkBigs compares the big file by size and mtime (rsync's quick check)
// and by content where the data and a hole are.
func checkBigs(t *testing.T, src, dst string) {
	t.Helper()
	if d := rsyncDiff(t, src, dst, false); d != "" {
		t.Errorf("big file differs:\n%s", d)
	}
	checkBig(t, filepath.Join(dst, "big"))
}

func checkBig(t *testing.T, path string) {
	t.Helper()
	f, fi := openStat(t, path)
	defer f.Close()
	if fi.Size() != bigSize {
		t.Errorf("%s: size %d, want %d", path, fi.Size(), bigSize)
	}
	got := make([]byte, 19)
	if _, err := f.ReadAt(got, bigOff); err != nil || string(got) != "past four gibibytes" {
		t.Errorf("%s: at %d read %q, %v", path, int64(bigOff), got, err)
	}
	zero := make([]byte, 4096)
	if _, err := f.ReadAt(zero, 3<<30); err != nil || !bytes.Equal(zero, make([]byte, 4096)) {
		t.Errorf("%s: hole at 3 GiB not zeros: %v", path, err)
	}
	// SEEK_DATA from 0 must skip the hole, landing at or before the data.
	if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); err != nil {
		t.Errorf("%s: SEEK_DATA: %v", path, err)
	} else if off > bigOff || off < 1<<30 {
		t.Errorf("%s: SEEK_DATA from 0 = %d, want within (1 GiB, %d]", path, off, int64(bigOff))
	}
}

// TestRsyncRoundTrip: rsync -aHAXS a crafted tree into staging, check it
// with rsync -n --checksum, commit, mount the revision and check again;
// writes to the revision fail with EROFS; a second rsync with changes and
// --delete leaves the first revision intact.
func TestRsyncRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatal("rsync is required")
	}
	base := t.TempDir()
	src, big := filepath.Join(base, "src"), filepath.Join(base, "big")
	craftTree(t, src, big)
	makeBig(t, big)

	r := testRepo(t)
	st := testStaging(t, r, "files")
	ctx := context.Background()
	mnt := mountDir(t)
	m, err := MountStaging(ctx, mnt, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)

	// bigdir first: the main rsync sets the root's times last.
	makeBig(t, filepath.Join(mnt, "bigdir"))
	run(t, "rsync", "-aHAXS", "--numeric-ids", src+"/", mnt+"/")
	if d := rsyncDiff(t, src, mnt, true); d != "" {
		t.Errorf("staging differs from source:\n%s", d)
		t.Log(run(t, "stat", "-c", "%A %a %n", filepath.Join(src, "medium"), filepath.Join(mnt, "medium"), filepath.Join(src, "small"), filepath.Join(mnt, "small")))
		t.Log(run(t, "getfacl", "-n", filepath.Join(src, "medium"), filepath.Join(mnt, "medium"), filepath.Join(mnt, "small")))
	}
	checkBigs(t, big, filepath.Join(mnt, "bigdir"))
	if out := run(t, "getfacl", "-n", "--absolute-names", filepath.Join(mnt, "medium")); !strings.Contains(out, "user:1234:rwx") {
		t.Errorf("ACL lost in staging:\n%s", out)
	}

	rev1, err := r.Commit(ctx, "files", layers.CommitOptions{Tags: []string{"first"}})
	if err != nil {
		t.Fatal(err)
	}
	// Keep the first source as it was for the final check.
	src1 := filepath.Join(base, "src1")
	run(t, "cp", "-a", src+"/.", src1)

	// Second pass: modify, delete, rename, add; rsync --delete.
	if err := os.WriteFile(filepath.Join(src, "small"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "empty")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(src, "sub", "inner"), filepath.Join(src, "sub", "renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "added"), bytes.Repeat([]byte("new"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "rsync", "-aHAXS", "--numeric-ids", "--delete", "--exclude=/bigdir", src+"/", mnt+"/")
	if d := rsyncDiff(t, src, mnt, true); d != "" {
		t.Errorf("staging differs from changed source:\n%s", d)
	}
	if _, err := r.Commit(ctx, "files", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}

	tree, err := r.Snapshot(ctx, "files", rev1.ID)
	if err != nil {
		t.Fatal(err)
	}
	rmnt := mountDir(t)
	rm, err := MountTree(ctx, rmnt, tree, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, rm)
	if d := rsyncDiff(t, src1, rmnt, true); d != "" {
		t.Errorf("first revision differs from its source:\n%s", d)
	}
	checkBigs(t, big, filepath.Join(rmnt, "bigdir"))

	// Every kind of write fails with EROFS.
	p := func(name string) string { return filepath.Join(rmnt, name) }
	writes := map[string]func() error{
		"create":   func() error { return os.WriteFile(p("new"), nil, 0o644) },
		"open rw":  func() error { f, err := os.OpenFile(p("small"), os.O_RDWR, 0); f.Close(); return err },
		"mkdir":    func() error { return os.Mkdir(p("d"), 0o755) },
		"unlink":   func() error { return os.Remove(p("small")) },
		"rename":   func() error { return os.Rename(p("small"), p("small2")) },
		"chmod":    func() error { return os.Chmod(p("small"), 0o600) },
		"truncate": func() error { return os.Truncate(p("small"), 0) },
		"symlink":  func() error { return os.Symlink("x", p("s")) },
		"setxattr": func() error { return unix.Setxattr(p("small"), "user.x", []byte("y"), 0) },
	}
	for name, fn := range writes {
		if err := fn(); !isErrno(err, syscall.EROFS) {
			t.Errorf("%s in revision mount: %v, want EROFS", name, err)
		}
	}
}
