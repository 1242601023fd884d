package tests

import (
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeTree writes a tree with everything rsync -aHAXS carries: hard links,
// symlinks (one dangling), a fifo, a socket, char and block devices,
// xattrs and an ACL, sparse and empty files, a >4 GiB sparse file,
// unicode and 255-byte names, a deep path, odd modes, owners and ns times.
func makeTree(t testing.TB, root string) {
	t.Helper()
	rng := rand.New(rand.NewSource(1))
	write := func(rel string, data []byte) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	random := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	write("small.txt", []byte("hello strata\n"))
	write("empty", nil)
	write("bin/random-3M", random(3<<20+17))
	write("bin/random-again", random(1<<20))
	text := strings.Repeat("the quick brown fox jumps over the lazy dog\n", 60000)
	write("text/fox.txt", []byte(text))
	write("text/fox-copy.txt", []byte(text)) // dedup
	write("ünïcödé/日本語/файл.txt", []byte("unicode\n"))
	write(strings.Repeat("n", 255), []byte("long name\n"))
	deep := filepath.Join(strings.Repeat("d/", 40), "deep.txt")
	write(deep, []byte("deep\n"))

	// Hard links.
	a := write("links/a", []byte("linked content\n"))
	if err := os.Link(a, filepath.Join(root, "links/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, filepath.Join(root, "links/c")); err != nil {
		t.Fatal(err)
	}
	// Symlinks.
	os.Symlink("../small.txt", filepath.Join(root, "links/sym"))
	os.Symlink("/nonexistent/dangling", filepath.Join(root, "links/dangling"))
	// Specials.
	mk := func(rel string, mode uint32, dev int) {
		if err := syscall.Mknod(filepath.Join(root, rel), mode, dev); err != nil {
			t.Fatalf("mknod %s: %v", rel, err)
		}
	}
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	mk("dev/fifo", syscall.S_IFIFO|0o600, 0)
	mk("dev/sock", syscall.S_IFSOCK|0o755, 0)
	mk("dev/null", syscall.S_IFCHR|0o666, int(mkdev(1, 3)))
	mk("dev/loop9", syscall.S_IFBLK|0o660, int(mkdev(7, 9)))
	// Sparse files: a hole in the middle, and > 4 GiB.
	sp := write("sparse/middle-hole", nil)
	f, _ := os.OpenFile(sp, os.O_WRONLY, 0)
	f.WriteAt(random(64<<10), 0)
	f.WriteAt(random(64<<10), 10<<20)
	f.Close()
	big := write("sparse/big-5G", nil)
	f, _ = os.OpenFile(big, os.O_WRONLY, 0)
	f.WriteAt([]byte("end of a 5 GiB file\n"), 5<<30)
	f.Close()
	// Owners, modes, xattrs, ACL, times.
	os.Chown(filepath.Join(root, "small.txt"), 1234, 5678)
	os.Chmod(filepath.Join(root, "bin/random-3M"), 0o4755)
	os.Chmod(filepath.Join(root, "text"), 0o1777)
	if err := syscall.Setxattr(filepath.Join(root, "small.txt"), "user.comment", []byte("an xattr value"), 0); err != nil {
		t.Fatalf("setxattr (does the temp filesystem support user xattrs?): %v", err)
	}
	sh(t, "setfacl", "-m", "u:1234:rwx,g:5678:r-x", filepath.Join(root, "text/fox.txt"))
	sh(t, "setfacl", "-d", "-m", "u:1234:rwx", filepath.Join(root, "text"))
	ts := time.Date(2001, 2, 3, 4, 5, 6, 789123456, time.UTC)
	os.Chtimes(filepath.Join(root, "small.txt"), ts, ts)
}

func mkdev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// TestFileTreeBackup is the main file-tree story.
// Steps: make a crafted tree; rsync -aHAXS into the staging mount; commit;
// mount the revision read-only; change, delete and rename files in the
// source; rsync --delete again; commit; then check both revisions.
// Pass: rsync's checksum dry run against each revision lists nothing (the
// first against a saved copy of the first source); writes to a revision
// fail with EROFS; diff names exactly the changed paths; list shows two
// revisions with the tags.
func TestFileTreeBackup(t *testing.T) {
	need(t, "rsync", "setfacl")
	r := newRepo(t)
	src := r.mkdir("src")
	makeTree(t, src)
	first := r.mkdir("src-first")
	sh(t, "rsync", "-aHAXS", "--numeric-ids", src+"/", first+"/")

	r.must("volume", "create", "home")
	stage := r.mkdir("mnt/staging")
	r.must("mount", "home", stage)
	sh(t, "rsync", "-aHAXS", "--numeric-ids", "--delete", src+"/", stage+"/")
	if out := itemize(t, src, stage); out != "" {
		t.Fatalf("staging differs from the source after rsync:\n%s", out)
	}
	id1 := strings.TrimSpace(r.must("commit", "home", "--tag", "first"))

	// Second backup: modify, delete, rename, add.
	os.WriteFile(filepath.Join(src, "small.txt"), []byte("changed\n"), 0o644)
	os.Remove(filepath.Join(src, "bin/random-again"))
	os.Rename(filepath.Join(src, "text/fox-copy.txt"), filepath.Join(src, "text/fox-renamed.txt"))
	os.WriteFile(filepath.Join(src, "new.txt"), []byte("new file\n"), 0o600)
	sh(t, "rsync", "-aHAXS", "--numeric-ids", "--delete", src+"/", stage+"/")
	id2 := strings.TrimSpace(r.must("commit", "home", "--tag", "second"))
	if id1 == id2 {
		t.Fatalf("two commits gave the same id %s", id1)
	}
	r.must("umount", stage)

	rev1, rev2 := r.mkdir("mnt/r1"), r.mkdir("mnt/r2")
	r.must("mount", "home@first", rev1)
	r.must("mount", "home@"+id2[:8], rev2)
	if out := itemize(t, first, rev1); out != "" {
		t.Errorf("revision 1 differs from the first source:\n%s", out)
	}
	// A sparse file looks sparse (st_blocks), so cp -a from the mount
	// keeps its holes instead of writing 5 GiB of zeros.
	var sst syscall.Stat_t
	if err := syscall.Stat(filepath.Join(rev1, "sparse/big-5G"), &sst); err != nil || sst.Blocks*512 > 1<<20 {
		t.Errorf("5 GiB sparse file on the revision mount: %d blocks, %v; want its data only", sst.Blocks, err)
	}
	cpBig := filepath.Join(r.work, "cp-big-5G")
	sh(t, "cp", "-a", filepath.Join(rev1, "sparse/big-5G"), cpBig)
	if err := syscall.Stat(cpBig, &sst); err != nil || sst.Size != 5<<30+20 || sst.Blocks*512 > 1<<20 {
		t.Errorf("cp -a of the sparse file from the revision mount: size %d, %d blocks, %v; want its holes kept", sst.Size, sst.Blocks, err)
	}
	os.Remove(cpBig)
	if out := itemize(t, src, rev2); out != "" {
		t.Errorf("revision 2 differs from the second source:\n%s", out)
	}
	err := os.WriteFile(filepath.Join(rev1, "small.txt"), []byte("x"), 0o644)
	if !errorsIs(err, syscall.EROFS) {
		t.Errorf("write into a revision mount: got %v, want EROFS", err)
	}
	diff := r.must("diff", "home@first", "home@second")
	for _, want := range []string{"small.txt", "bin/random-again", "text/fox-renamed.txt", "new.txt"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff does not mention %s:\n%s", want, diff)
		}
	}
	if strings.Contains(diff, "fox.txt ") {
		t.Errorf("diff mentions the unchanged fox.txt:\n%s", diff)
	}
	// Scripts read the change as a word (it came out as a number).
	var dj struct {
		Entries []struct{ Path, Change string }
	}
	if err := json.Unmarshal([]byte(r.must("--json", "diff", "home@first", "home@second")), &dj); err != nil {
		t.Fatalf("diff --json: %v", err)
	}
	changes := map[string]string{}
	for _, e := range dj.Entries {
		changes[e.Path] = e.Change
	}
	if changes["/new.txt"] != "added" && changes["new.txt"] != "added" {
		t.Errorf("diff --json: new.txt is %q, want added (all: %v)", changes["new.txt"]+changes["/new.txt"], changes)
	}
	list := r.must("list", "home")
	if !strings.Contains(list, id1[:8]) || !strings.Contains(list, id2[:8]) || !strings.Contains(list, "first") {
		t.Errorf("list misses revisions or tags:\n%s", list)
	}
	r.must("umount", rev1)
	r.must("umount", rev2)
}

func errorsIs(err error, target syscall.Errno) bool {
	for err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return e == target
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestInPlaceRewrite: files rewritten in place in staging (rsync
// --inplace, dd conv=notrunc), where staging keeps the unchanged chunks
// of the stored file instead of copying it whole.
// Steps: back up a tree with a 40 MiB image, an 8 MiB database file and a
// 16 MiB file written straight into staging; commit; change the source
// image in two places, shrink the database and append to it, and dd the
// same 4 KiB into the source's and staging's third file at 9 MiB; rsync
// --inplace --no-whole-file; commit; mount both revisions.
// Pass: staging matches the changed source before the commit; the first
// revision still matches the first source and the second the changed one
// (rsync's checksum dry run lists nothing).
func TestInPlaceRewrite(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	writeRandom(t, filepath.Join(src, "vm.img"), 40<<20, 31)
	writeRandom(t, filepath.Join(src, "db"), 8<<20, 32)
	writeRandom(t, filepath.Join(src, "direct.img"), 16<<20, 33)
	first := r.mkdir("src-first")
	sh(t, "rsync", "-a", src+"/", first+"/")
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-a", src+"/", stage+"/")
	r.must("commit", "home", "--tag", "first")

	patch := filepath.Join(r.work, "patch")
	writeRandom(t, patch, 64<<10, 34)
	sh(t, "dd", "if="+patch, "of="+filepath.Join(src, "vm.img"), "bs=4k", "count=1", "seek=1000", "conv=notrunc", "status=none")
	sh(t, "dd", "if="+patch, "of="+filepath.Join(src, "vm.img"), "bs=64k", "seek=480", "conv=notrunc", "status=none")
	sh(t, "truncate", "-s", "5M", filepath.Join(src, "db"))
	f, err := os.OpenFile(filepath.Join(src, "db"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 100<<10)
	fillRandom(tail, 35)
	if _, err := f.Write(tail); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, dir := range []string{src, stage} {
		sh(t, "dd", "if="+patch, "of="+filepath.Join(dir, "direct.img"), "bs=4k", "count=1", "seek=2304", "conv=notrunc", "status=none")
	}
	// rsync's quick check compares whole seconds: the changes came
	// within the second of the first backup, so date them an hour on,
	// as a day's changes would be.
	later := time.Now().Add(time.Hour)
	for _, name := range []string{"vm.img", "db", "direct.img"} {
		if err := os.Chtimes(filepath.Join(src, name), later, later); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "rsync", "-a", "--inplace", "--no-whole-file", src+"/", stage+"/")
	if out := itemize(t, src, stage); out != "" {
		t.Fatalf("staging differs from the changed source:\n%s", out)
	}
	r.must("commit", "home", "--tag", "second")
	r.must("umount", stage)

	if out := itemize(t, first, r.mountRevision("home@first")); out != "" {
		t.Errorf("revision first differs from the first source:\n%s", out)
	}
	if out := itemize(t, src, r.mountRevision("home@second")); out != "" {
		t.Errorf("revision second differs from the changed source:\n%s", out)
	}
}
