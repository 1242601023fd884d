package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Restores into a directory that already holds something: what is there
// may be planted by someone else, of another type than the revision's, or
// damaged with its size and mtime kept.

// commitTree backs src up as fs volume name (rsync into staging) and
// commits it; extra runs on the staging mount before the commit.
func commitTree(t *testing.T, r *repo, name, src string, extra func(stage string)) {
	t.Helper()
	stage := r.mountNewVolume(name)
	sh(t, "rsync", "-aHAXS", src+"/", stage+"/")
	if extra != nil {
		extra(stage)
	}
	r.must("commit", name)
	r.must("umount", stage)
}

// restoreJSON is what `strata --json restore` prints.
type restoreJSON struct {
	Files       int64 `json:"files"`
	Skipped     int64 `json:"skipped"`
	Rewritten   int64 `json:"rewritten"`
	Problems    int64 `json:"problems"`
	ProblemList []struct {
		Path, Kind, Message string
	} `json:"problem_list"`
}

func parseRestoreJSON(t *testing.T, res result) restoreJSON {
	t.Helper()
	var js restoreJSON
	// Progress lines (JSON too) go to stderr; the result is stdout's.
	if err := json.Unmarshal([]byte(res.stdout), &js); err != nil {
		t.Fatalf("restore --json: %v\nstdout: %s\nstderr: %s", err, res.stdout, res.stderr)
	}
	return js
}

// TestRestoreNoFollowSymlinks: symlinks inside DEST are replaced, never
// followed. Before, a symlink to a directory outside DEST where the
// revision has a directory made restore write the revision's files there.
// Steps: back up a tree with directories c/ (files, a fifo, a symlink,
// hard links) and d/sub/, and a file top; in DEST plant c -> OUTSIDE/v1,
// d/sub -> OUTSIDE/v2 (below a real directory) and top -> OUTSIDE/file;
// restore into DEST.
// Pass: exit 0; OUTSIDE/v1 and v2 stay empty and OUTSIDE/file unchanged;
// c and d/sub are real directories; rsync finds DEST equal to the source.
func TestRestoreNoFollowSymlinks(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	for _, d := range []string{"c/deep", "d/sub"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	for _, f := range []string{"c/f1", "c/deep/f2", "d/sub/f3", "top"} {
		writeRandom(t, filepath.Join(src, f), 5000, uint64(len(f)))
	}
	os.Link(filepath.Join(src, "c/f1"), filepath.Join(src, "c/hl"))
	os.Symlink("f1", filepath.Join(src, "c/sym"))
	syscall.Mknod(filepath.Join(src, "c/fifo"), syscall.S_IFIFO|0o640, 0)
	commitTree(t, r, "home", src, nil)

	outside := r.mkdir("outside")
	v1, v2 := r.mkdir("outside/v1"), r.mkdir("outside/v2")
	file := filepath.Join(outside, "file")
	if err := os.WriteFile(file, []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := r.mkdir("dest")
	r.mkdir("dest/d")
	for link, target := range map[string]string{"c": v1, "d/sub": v2, "top": file} {
		if err := os.Symlink(target, filepath.Join(dest, link)); err != nil {
			t.Fatal(err)
		}
	}
	if res := r.run("restore", "home@latest", dest); res.code != 0 {
		t.Errorf("restore over planted symlinks: exit %d\n%s", res.code, res.stderr)
	}
	for _, v := range []string{v1, v2} {
		if ents, _ := os.ReadDir(v); len(ents) != 0 {
			t.Errorf("restore wrote %d entries into %s, outside DEST, through a symlink", len(ents), v)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != "not yours" {
		t.Errorf("restore wrote %q into %s, outside DEST, through a symlink", b, file)
	}
	for _, d := range []string{"c", "d/sub"} {
		if fi, err := os.Lstat(filepath.Join(dest, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s after the restore: %v, %v; want a real directory", d, fi.Mode(), err)
		}
	}
	if out := itemize(t, src, dest); out != "" {
		t.Errorf("restored tree differs from the source:\n%s", out)
	}
}

// TestRestoreTypeConflicts: an entry in DEST of another type than the
// revision's is replaced, except a non-empty directory (user data), which
// is reported; the restore goes on with the rest. Before, the first
// conflict ended the restore ("open DEST/file: is a directory") and a
// directory's mode and mtime went onto a regular file in its place.
// Steps: back up a tree (120 files) with a file, an empty directory (mode
// 0751, mtime 1980), a symlink, a fifo and a file busy; in DEST put the
// opposite type at each (busy: a non-empty directory of mode 0700);
// restore into DEST, then again with --json.
// Pass: exit 1, naming busy as a conflict and the restore as incomplete;
// busy and its content are as they were; each other entry has the
// revision's type, and a directory's mode only on the directory; rsync
// finds nothing else different; the rerun reports the one problem and
// keeps the files already there.
func TestRestoreTypeConflicts(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 120, 7)
	dirTime := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	os.WriteFile(filepath.Join(src, "file"), []byte("a file"), 0o644)
	os.WriteFile(filepath.Join(src, "busy"), []byte("a file where DEST has a full directory"), 0o644)
	os.Mkdir(filepath.Join(src, "empty_dir"), 0o751)
	os.Chmod(filepath.Join(src, "empty_dir"), 0o751)
	os.Chtimes(filepath.Join(src, "empty_dir"), dirTime, dirTime)
	os.Symlink("file", filepath.Join(src, "symlink"))
	syscall.Mknod(filepath.Join(src, "fifo"), syscall.S_IFIFO|0o640, 0)
	commitTree(t, r, "home", src, nil)

	dest := r.mkdir("dest")
	cases := []struct {
		name    string
		prepare func(p string) error
		check   func(p string, fi os.FileInfo) string // "" if right
	}{
		{"file", func(p string) error { return os.Mkdir(p, 0o700) }, func(p string, fi os.FileInfo) string {
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
				return "want a regular file of mode 0644"
			}
			return ""
		}},
		{"empty_dir", func(p string) error { return os.WriteFile(p, []byte("x\n"), 0o600) }, func(p string, fi os.FileInfo) string {
			if !fi.IsDir() || fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(dirTime) {
				return "want a directory of mode 0751 and mtime 1980-01-01"
			}
			return ""
		}},
		{"symlink", func(p string) error { return os.Mkdir(p, 0o755) }, func(p string, fi os.FileInfo) string {
			if target, _ := os.Readlink(p); target != "file" {
				return "want a symlink to file"
			}
			return ""
		}},
		{"fifo", func(p string) error { return os.Symlink("/dev/null", p) }, func(p string, fi os.FileInfo) string {
			if fi.Mode()&os.ModeNamedPipe == 0 {
				return "want a fifo"
			}
			return ""
		}},
		{"d0", func(p string) error { return os.WriteFile(p, nil, 0o600) }, func(p string, fi os.FileInfo) string {
			if !fi.IsDir() {
				return "want a directory"
			}
			return ""
		}},
		{"busy", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(p, "mine.txt"), []byte("user data"), 0o600)
		}, func(p string, fi os.FileInfo) string {
			if b, _ := os.ReadFile(filepath.Join(p, "mine.txt")); !fi.IsDir() || fi.Mode().Perm() != 0o700 || string(b) != "user data" {
				return "want the directory left as it was (mode 0700, mine.txt)"
			}
			return ""
		}},
	}
	for _, c := range cases {
		if err := c.prepare(filepath.Join(dest, c.name)); err != nil {
			t.Fatal(err)
		}
	}
	res := r.run("restore", "home@latest", dest)
	if res.code != 1 || !strings.Contains(res.stderr, "conflict: "+filepath.Join(dest, "busy")+": a non-empty directory") || !strings.Contains(res.stderr, "incomplete") {
		t.Errorf("restore over entries of other types: exit %d, stderr %q; want exit 1 naming busy as a conflict and the restore incomplete", res.code, res.stderr)
	}
	for _, c := range cases {
		p := filepath.Join(dest, c.name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if msg := c.check(p, fi); msg != "" {
			t.Errorf("%s: got %v %v, %s", c.name, fi.Mode(), fi.ModTime(), msg)
		}
	}
	var differ []string
	for _, l := range strings.Split(itemize(t, src, dest), "\n") {
		if l != "" && !strings.Contains(l, "busy") {
			differ = append(differ, l)
		}
	}
	if len(differ) > 0 {
		t.Errorf("restored tree differs from the source in %d entries beyond busy, e.g.:\n%s", len(differ), strings.Join(differ[:min(10, len(differ))], "\n"))
	}

	res = r.run("--json", "restore", "home@latest", dest)
	js := parseRestoreJSON(t, res)
	if res.code != 1 || js.Problems != 1 || len(js.ProblemList) != 1 || js.ProblemList[0].Kind != "conflict" || js.Skipped < 120 {
		t.Errorf("rerun: exit %d, %+v; want exit 1, the one conflict, the files kept", res.code, js)
	}
}

// TestRestoreChecksum: --checksum compares the content of files kept by
// size and mtime and rewrites those that differ. Before, there was no way
// to catch a file damaged with its size and mtime kept: the restore kept
// it and exited 0.
// Steps: back up a tree (40 files and a sparse file); restore it; change
// bytes of one file and inside the sparse file's hole, keeping size and
// mtime; restore again without --checksum (--json), then with it (--json,
// then text).
// Pass: without: exit 0, every file kept and counted so, the damage stays;
// with: exit 0, the two files rewritten and counted, the rest kept, rsync
// finds no difference; the text summary says what was kept and rewritten.
func TestRestoreChecksum(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 40, 11)
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.WriteAt([]byte("tail"), 8<<20)
	f.Close()
	commitTree(t, r, "home", src, nil)
	dest := filepath.Join(r.work, "dest")
	r.must("restore", "home@latest", dest)
	const files = 41

	tamper := func(rel string, off int64) {
		p := filepath.Join(dest, rel)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("tampered"), off)
		f.Close()
		os.Chtimes(p, fi.ModTime(), fi.ModTime())
	}
	tamper("d3/e3/f3", 100)
	tamper("sparse", 4<<20)

	res := r.run("--json", "restore", "home@latest", dest)
	if js := parseRestoreJSON(t, res); res.code != 0 || js.Skipped != files || js.Rewritten != 0 {
		t.Errorf("restore without --checksum: exit %d, %+v; want every file kept", res.code, js)
	}
	if out := itemize(t, src, dest); !strings.Contains(out, "d3/e3/f3") || !strings.Contains(out, "sparse") {
		t.Fatalf("restore without --checksum repaired the damage, or the damage did not take:\n%s", out)
	}
	res = r.run("--json", "restore", "--checksum", "home@latest", dest)
	if js := parseRestoreJSON(t, res); res.code != 0 || js.Skipped != files-2 || js.Rewritten != 2 {
		t.Errorf("restore --checksum: exit %d, %+v; want 2 rewritten, %d kept", res.code, js, files-2)
	}
	if out := itemize(t, src, dest); out != "" {
		t.Errorf("restore --checksum left differences:\n%s", out)
	}
	tamper("d3/e3/f3", 0)
	res = r.run("restore", "--checksum", "home@latest", dest)
	if want := "(40 kept as already there (same content), 1 rewritten as they differed)"; res.code != 0 || !strings.Contains(res.stderr, want) {
		t.Errorf("restore --checksum: exit %d, stderr %q; want it to say %q", res.code, res.stderr, want)
	}
}

// TestRestoreDestLimits: what the destination filesystem cannot hold. An
// xattr too large for it is reported and the restore goes on; a full
// disk stops it at once. Before, an xattr of 64 KiB on ext4 ("set xattr
// user.big on DEST/x1/cap: no space left on device") ended the restore,
// leaving DEST and x1 with mode 0700 and the restore's mtime, and a full
// disk came with the hint that a shard or spool filesystem was full.
// Steps: back up a tree with x1/ (mode 0750, old mtime) holding cap, which
// gets a 64 KiB user.big (set on the staging mount: the source's
// filesystem cannot hold it) and a small user.small, and a later file z;
// restore it to a 16 MiB ext4; then restore a 24 MiB file there.
// Pass: first: exit 1 naming user.big, its size and the filesystem;
// cap, z and user.small restored; DEST and x1 have the revision's mode and
// mtime. Second: exit 1 saying the restore stopped and DEST is
// incomplete, without the repository's full-filesystem hint.
func TestRestoreDestLimits(t *testing.T) {
	need(t, "rsync", "mkfs.ext4", "mount", "umount")
	r := newRepo(t)
	src := r.mkdir("src")
	os.Mkdir(filepath.Join(src, "x1"), 0o750)
	writeRandom(t, filepath.Join(src, "x1/cap"), 3000, 1)
	writeRandom(t, filepath.Join(src, "z"), 3000, 2)
	if err := syscall.Setxattr(filepath.Join(src, "x1/cap"), "user.small", []byte("ok"), 0); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, d := range []string{"x1", "."} {
		os.Chmod(filepath.Join(src, d), 0o750)
		os.Chtimes(filepath.Join(src, d), old, old)
	}
	commitTree(t, r, "home", src, func(stage string) {
		if err := syscall.Setxattr(filepath.Join(stage, "x1/cap"), "user.big", bytes.Repeat([]byte("x"), 64<<10), 0); err != nil {
			t.Fatalf("set a 64 KiB xattr on the staging mount: %v", err)
		}
	})
	bigSrc := r.mkdir("bigsrc")
	writeRandom(t, filepath.Join(bigSrc, "f"), 24<<20, 3)
	commitTree(t, r, "big", bigSrc, nil)

	ext4 := r.ext4("ext4", 16<<20)

	dest := filepath.Join(ext4, "rx2")
	res := r.run("restore", "home@latest", dest)
	if res.code != 1 || !strings.Contains(res.stderr, "set xattr user.big on "+filepath.Join(dest, "x1/cap")+": its value of 64.0 KiB is larger than the destination filesystem supports") {
		t.Errorf("restore with a 64 KiB xattr to ext4: exit %d, stderr %q; want exit 1 naming user.big and its size", res.code, res.stderr)
	}
	for _, f := range []string{"x1/cap", "z"} {
		got, _ := os.ReadFile(filepath.Join(dest, f))
		want, _ := os.ReadFile(filepath.Join(src, f))
		if len(want) == 0 || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes restored, want %d as in the source", f, len(got), len(want))
		}
	}
	v := make([]byte, 16)
	if n, err := syscall.Getxattr(filepath.Join(dest, "x1/cap"), "user.small", v); err != nil || string(v[:n]) != "ok" {
		t.Errorf("user.small beside the xattr too large: %v; want it restored", err)
	}
	for _, d := range []string{"x1", "."} {
		fi, err := os.Stat(filepath.Join(dest, d))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(old) {
			t.Errorf("%s after the restore: mode %v, mtime %v; want 0750 and %v", d, fi.Mode().Perm(), fi.ModTime(), old)
		}
	}

	res = r.run("restore", "big@latest", filepath.Join(ext4, "big"))
	if res.code != 1 || !strings.Contains(res.stderr, "no space left on device; restore stopped, "+filepath.Join(ext4, "big")+" is incomplete") || strings.Contains(res.stderr, "shard or spool") {
		t.Errorf("restore of 24 MiB to a 16 MiB filesystem: exit %d, stderr %q; want it stopped, saying DEST is full and incomplete", res.code, res.stderr)
	}

	// A block volume's image (all data, no holes) does not fit either:
	// the same hint, and the partial image is gone.
	need(t, "nbdcopy")
	img := filepath.Join(r.work, "disk.img")
	writeRandom(t, img, 24<<20, 4)
	r.must("volume", "create", "disk", "--block", "24M")
	_, uri := r.serveNBD()
	sh(t, "nbdcopy", img, uri("disk"))
	r.must("commit", "disk")
	os.RemoveAll(filepath.Join(ext4, "big"))
	res = r.run("restore", "disk@latest", filepath.Join(ext4, "disk.img"))
	if res.code != 1 || !strings.Contains(res.stderr, "the destination filesystem is full") || !strings.Contains(res.stderr, "partial image was removed") || strings.Contains(res.stderr, "shard or spool") {
		t.Errorf("restore of a 24 MiB image to a 16 MiB filesystem: exit %d, stderr %q; want it stopped, saying DEST is full", res.code, res.stderr)
	}
	if _, err := os.Lstat(filepath.Join(ext4, "disk.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial image after the failed restore: %v; want it removed", err)
	}
}

// TestRestoreIntoHostileDest: what a review found the first fix still let
// through. Steps: a revision with a file (mode 0600), a file dated 2300,
// and no ACLs; DEST holds a hard link to a file outside it with the same
// size and mtime (so the quick check would keep it), and has a default
// ACL. Pass: the outside file keeps its mode and content (the link is
// replaced, not kept and chmodded); the year-2300 mtime comes back as
// such (it overflowed to 1901); no restored file carries the inherited
// ACL.
func TestRestoreIntoHostileDest(t *testing.T) {
	need(t, "rsync", "setfacl", "getfacl")
	r := newRepo(t)
	src := r.mkdir("src")
	when := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	os.WriteFile(filepath.Join(src, "foo"), []byte("revision"), 0o600)
	os.Chtimes(filepath.Join(src, "foo"), when, when)
	future := time.Date(2300, 1, 2, 3, 4, 5, 0, time.UTC)
	os.WriteFile(filepath.Join(src, "future"), []byte("x"), 0o644)
	// Not os.Chtimes: it goes through UnixNano too.
	sh(t, "touch", "-d", "2300-01-02 03:04:05 UTC", filepath.Join(src, "future"))
	commitTree(t, r, "home", src, nil)

	outside := filepath.Join(r.mkdir("outside"), "victim")
	os.WriteFile(outside, []byte("VICTIM!!"), 0o644) // same size as "revision"
	os.Chmod(outside, 0o644)
	os.Chtimes(outside, when, when)
	dest := r.mkdir("dest")
	sh(t, "setfacl", "-d", "-m", "u:65534:rwx", dest)
	if err := os.Link(outside, filepath.Join(dest, "foo")); err != nil {
		t.Fatal(err)
	}
	r.must("restore", "home@latest", dest)

	if b, _ := os.ReadFile(outside); string(b) != "VICTIM!!" {
		t.Errorf("the file outside DEST now reads %q", b)
	}
	if st, err := os.Stat(outside); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("the file outside DEST: %v, %v; want mode 0644 kept", st.Mode(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "foo")); string(b) != "revision" {
		t.Errorf("restored foo reads %q", b)
	}
	if st, err := os.Stat(filepath.Join(dest, "future")); err != nil || !st.ModTime().Equal(future) {
		t.Errorf("restored mtime of a file from 2300: %v, %v", st.ModTime(), err)
	}
	for _, f := range []string{"foo", "future"} {
		if acl := sh(t, "getfacl", "-n", "-c", "--omit-header", filepath.Join(dest, f)); strings.Contains(acl, "user:65534") {
			t.Errorf("restored %s carries the ACL inherited from DEST:\n%s", f, acl)
		}
	}
}
