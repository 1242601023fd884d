package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guestDir builds (once per machine) the tiny test guest: a Debian cloud
// kernel and a busybox initramfs that prints a marker file from /dev/vda.
func guestDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "strata-test-guest")
	if _, err := os.Stat(filepath.Join(dir, "initrd.img")); err == nil {
		return dir
	}
	out, err := exec.Command("../contrib/vm/make-test-guest.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build test guest: %v\n%s", err, out)
	}
	return dir
}

// TestBootVMFromRevision boots a VM from a backup.
// Steps: make an ext4 image holding a marker file; copy it into a block
// volume through NBD; commit; overwrite the marker in staging and commit
// again; serve the first revision with --overlay; boot a VM from it
// (--accel auto: KVM when a probe boot works, else TCG)
// with contrib/vm/boot-revision.sh, writes going to the overlay.
// Pass: the guest prints the first revision's marker (not the second's),
// and afterwards the revision still equals the original image.
func TestBootVMFromRevision(t *testing.T) {
	need(t, "qemu-system-x86_64", "mkfs.ext4", "nbdcopy", "qemu-img")
	guest := guestDir(t)
	r := newRepo(t)
	content := r.mkdir("content")
	os.WriteFile(filepath.Join(content, "strata-marker"), []byte("booted from revision one\n"), 0o644)
	img := filepath.Join(r.work, "disk.img")
	sh(t, "truncate", "-s", "64M", img)
	sh(t, "mkfs.ext4", "-q", "-F", "-d", content, img)

	r.must("volume", "create", "vm", "--block", "64M")
	sock, uri := r.serveNBD()
	sh(t, "nbdcopy", img, uri("vm"))
	r.must("commit", "vm", "--tag", "one")
	// Change staging so that booting the wrong thing shows.
	os.WriteFile(filepath.Join(content, "strata-marker"), []byte("revision two\n"), 0o644)
	img2 := filepath.Join(r.work, "disk2.img")
	sh(t, "truncate", "-s", "64M", img2)
	sh(t, "mkfs.ext4", "-q", "-F", "-d", content, img2)
	sh(t, "nbdcopy", img2, uri("vm"))
	r.must("commit", "vm", "--tag", "two")
	r.must("nbd", "stop", "--listen", "unix:"+sock)

	r.must("nbd", "serve", "--listen", "unix:"+sock, "--overlay")
	cmd := exec.Command("../contrib/vm/boot-revision.sh", "--socket", sock, "--accel", "auto", "--writable",
		"--kernel", filepath.Join(guest, "vmlinuz"), "--initrd", filepath.Join(guest, "initrd.img"),
		"--timeout", "240", "vm@one")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("boot VM: %v\n%s", err, tail(string(out), 3000))
	}
	s := string(out)
	i, j := strings.Index(s, "STRATA-MARKER-BEGIN"), strings.Index(s, "STRATA-MARKER-END")
	if i < 0 || j < i {
		t.Fatalf("guest printed no marker:\n%s", tail(s, 3000))
	}
	if got := s[i:j]; !strings.Contains(got, "booted from revision one") {
		t.Fatalf("guest printed %q, want the first revision's marker", got)
	}
	accel := "?"
	if k := strings.Index(s, "boot-revision: booting "); k >= 0 {
		line := strings.SplitN(s[k:], "\n", 2)[0]
		accel = line[strings.LastIndex(line, " ")+1:]
	}
	t.Logf("VM booted from vm@one (%s) and printed its marker in %s", accel, time.Since(start).Round(time.Second))
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@one"))
	// The overlay is gone with the server; the revision never changed.
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, "nbd+unix:///vm@one?socket="+sock)
	r.must("nbd", "stop", "--listen", "unix:"+sock)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
