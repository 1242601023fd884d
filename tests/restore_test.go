package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRestoreTree copies revisions out with strata restore.
// Steps: back up a tree with hard links, a symlink, a fifo, xattrs and a
// sparse file; commit; restore the whole revision to a new directory;
// restore one subdirectory; restore again over the first copy (resume).
// Pass: rsync's checksum dry run finds no difference (owners, modes, times,
// xattrs, hard links included); the sparse file stays sparse; the
// subdirectory restore holds only that subtree; the second restore skips
// every file.
func TestRestoreTree(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 120, 31)
	os.Link(filepath.Join(src, "d0/e0/f0"), filepath.Join(src, "hardlink"))
	os.Symlink("d0/e0/f0", filepath.Join(src, "symlink"))
	syscall.Mknod(filepath.Join(src, "fifo"), syscall.S_IFIFO|0o640, 0)
	syscall.Setxattr(filepath.Join(src, "d0/e0/f0"), "user.note", []byte("kept"), 0)
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.WriteAt([]byte("tail"), 256<<20)
	f.Close()

	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-aHAXS", src+"/", stage+"/")
	r.must("commit", "home")
	r.must("umount", stage)

	dest := filepath.Join(r.work, "restored")
	r.must("restore", "home@latest", dest)
	if out := itemize(t, src, dest); out != "" {
		t.Errorf("restored tree differs:\n%s", out)
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dest, "sparse"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("restored sparse file occupies %d bytes", st.Blocks*512)
	}
	sub := filepath.Join(r.work, "sub")
	r.must("restore", "home@latest:d0/e0", sub)
	if out := itemize(t, filepath.Join(src, "d0/e0"), sub); out != "" {
		t.Errorf("restored subdirectory differs:\n%s", out)
	}
	res := r.run("--json", "restore", "home@latest", dest)
	if res.code != 0 || !strings.Contains(res.stdout, `"skipped"`) || strings.Contains(res.stdout, `"skipped": 0`) {
		t.Errorf("second restore did not resume (skip existing files): %s %s", res.stdout, res.stderr)
	}

	// One file to standard output, as restic dump (QA: refused for file
	// trees); a directory or the whole tree there is refused.
	want, _ := os.ReadFile(filepath.Join(src, "d0/e0/f0"))
	if got := r.must("restore", "home@latest:d0/e0/f0", "-"); got != string(want) {
		t.Errorf("restore of one file to stdout: %d bytes, want the file's %d", len(got), len(want))
	}
	for _, spec := range []string{"home@latest", "home@latest:d0"} {
		if res := r.run("restore", spec, "-"); res.code != 2 {
			t.Errorf("restore %s -: exit %d, stderr %q; want a usage error", spec, res.code, res.stderr)
		}
	}
}

// TestRestoreDiskBadDest: a block restore checks where it writes before it
// writes. Before, a device too small was overwritten in part and then
// failed ("write /dev/loop0: write /dev/loop0: no space left on
// device"), a directory gave "open D: open D: is a directory", and a
// failed restore to a new file left it behind.
// Steps: commit a 16 MiB block volume with data; restore it to an 8 MiB
// loop device full of 0xee; to an existing directory; to a new file on a
// 4 MiB tmpfs; a 100 TiB volume to a new file on ext4.
// Pass: each fails; the device message gives both sizes and the device
// still holds only 0xee; the directory message says it is a directory;
// no message repeats its prefix; no new file is left behind.
func TestRestoreDiskBadDest(t *testing.T) {
	need(t, "losetup", "mount", "umount", "dd")
	r := newRepo(t)
	img := filepath.Join(r.work, "a.img")
	makeImage(t, img, 16<<20, 51)
	r.must("volume", "create", "vm", "--block", "16M")
	stage := r.mkdir("stage")
	r.must("mount", "vm", stage)
	sh(t, "dd", "if="+img, "of="+filepath.Join(stage, "disk.img"), "bs=1M", "conv=notrunc,fsync", "status=none")
	r.must("umount", stage)
	r.must("commit", "vm", "--tag", "first")

	doubled := func(msg string) bool {
		for _, l := range strings.Split(msg, "\n") {
			if i := strings.Index(l, ": "); i > 0 && strings.Count(l, l[:i+2]) > 1 {
				return true
			}
		}
		return false
	}
	small := filepath.Join(r.work, "small.img")
	junk := bytes.Repeat([]byte{0xee}, 8<<20)
	if err := os.WriteFile(small, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", small))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	res := r.run("restore", "vm@first", loop)
	if res.code == 0 || !strings.Contains(res.stderr, loop+" is 8.0 MiB") || !strings.Contains(res.stderr, "16.0 MiB") || doubled(res.stderr) {
		t.Errorf("restore to an 8 MiB device: exit %d, stderr %q; want a refusal giving both sizes", res.code, res.stderr)
	}
	exec.Command("losetup", "-d", loop).Run()
	if b, _ := os.ReadFile(small); !bytes.Equal(b, junk) {
		t.Error("the refused restore wrote to the device")
	}

	dir := r.mkdir("somedir")
	if res := r.run("restore", "vm@first", dir); res.code == 0 || !strings.Contains(res.stderr, dir+" is a directory") || doubled(res.stderr) {
		t.Errorf("restore into a directory: exit %d, stderr %q; want 'is a directory'", res.code, res.stderr)
	}

	tiny := r.mkdir("tiny")
	sh(t, "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", tiny)
	t.Cleanup(func() { exec.Command("umount", tiny).Run() })
	out := filepath.Join(tiny, "vm.img")
	if res := r.run("restore", "vm@first", out); res.code == 0 || !strings.Contains(res.stderr, "no space") || doubled(res.stderr) {
		t.Errorf("restore to a 4 MiB filesystem: exit %d, stderr %q", res.code, res.stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the failed restore left %s behind", out)
	}

	r.must("volume", "create", "huge", "--block", "100T")
	r.must("commit", "huge")
	// On ext4 of its own (4 KiB blocks: files up to 16 TiB), so that the
	// case does not depend on the filesystem TMPDIR is on.
	ext4 := r.ext4("ext4", 16<<20)
	out = filepath.Join(ext4, "huge.img")
	if res := r.run("restore", "huge@latest", out); res.code == 0 || !strings.Contains(res.stderr, "cannot hold a file of 100.0 TiB") || doubled(res.stderr) {
		t.Errorf("restore of 100 TiB to ext4: exit %d, stderr %q", res.code, res.stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the failed restore left %s behind", out)
	}
}
