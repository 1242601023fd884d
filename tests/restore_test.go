package tests

import (
	"os"
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
}
