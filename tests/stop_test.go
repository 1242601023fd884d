package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopBusyMount: a stop must not tear down a staging mount that is in
// use. Before, `strata stop` and SIGTERM detached a block staging mount
// that held a loop-mounted filesystem and exited; the filesystem's later
// writes got EIO and what it had not written back was lost.
// Steps: mount a block volume's staging, put ext4 on disk.img and mount it
// through a loop device, write a file; strata stop; strata umount; write
// again; SIGTERM
// the server; write again, try a new mount; unmount the loop filesystem;
// mount staging again and read the files through a new loop mount; then
// strata stop --force with the loop filesystem still mounted.
// Pass: stop exits non-zero naming the mount and the loop device, and the
// server and mount keep working; umount refuses naming the loop mount; after SIGTERM the server serves on (the
// new mount is refused as the server is stopping) and exits once the loop
// filesystem is unmounted; all three files are there after the restart;
// stop --force stops the server.
func TestStopBusyMount(t *testing.T) {
	need(t, "mkfs.ext4", "mount", "umount", "sync", "losetup")
	r := newRepo(t)
	r.must("volume", "create", "sp", "--block", "64M")
	stg, lvm := r.mkdir("stg"), r.mkdir("lvm")
	r.must("mount", "sp", stg)
	disk := filepath.Join(stg, "disk.img")
	sh(t, "mkfs.ext4", "-q", disk)
	loopMount := func(opts string) {
		t.Helper()
		sh(t, "mount", "-o", opts, disk, lvm)
	}
	loopMount("loop")
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", "-l", lvm).Run()
		}
	})
	write := func(name string) {
		t.Helper()
		p := filepath.Join(lvm, name)
		if err := os.WriteFile(p, []byte(name+"\n"), 0o644); err != nil {
			t.Fatalf("write %s on the loop filesystem: %v", name, err)
		}
		if out, err := exec.Command("sync", "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("sync -f %s: %v\n%s", name, err, out)
		}
	}
	write("f1")

	res := r.run("stop")
	if res.code == 0 || !strings.Contains(res.stderr, stg) || !strings.Contains(res.stderr, "busy") ||
		!strings.Contains(res.stderr, "/dev/loop") || !strings.Contains(res.stderr, lvm) || !strings.Contains(res.stderr, "--force") {
		t.Errorf("stop with a busy staging mount: exit %d, stderr %q; want a refusal naming %s, the loop device on %s and --force", res.code, res.stderr, stg, lvm)
	}
	res = r.run("umount", stg)
	if res.code == 0 || !strings.Contains(res.stderr, "busy") || !strings.Contains(res.stderr, lvm) || strings.Count(res.stderr, "unmount "+stg) > 1 {
		t.Errorf("umount of a busy staging mount: exit %d, stderr %q; want a refusal naming the loop mount on %s, once", res.code, res.stderr, lvm)
	}
	if st := r.must("status"); !strings.Contains(st, "server running") || !strings.Contains(st, "mount "+stg) {
		t.Errorf("after the refused stop, status says:\n%s", st)
	}
	write("f2")

	pid := r.serverPID()
	syscall.Kill(pid, syscall.SIGTERM)
	time.Sleep(2 * time.Second)
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("SIGTERM ended the server under a busy mount")
	}
	write("f3")
	other := r.mkdir("other")
	r.must("volume", "create", "files")
	if res := r.run("mount", "files", other); res.code == 0 || !strings.Contains(res.stderr, "stopping") {
		t.Errorf("mount while the server waits to stop: exit %d, stderr %q", res.code, res.stderr)
		r.run("umount", other)
	}
	sh(t, "umount", lvm)
	mounted = false
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i == 300 {
			t.Fatal("the server still runs 30 s after the busy mount was released")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), stg) {
		t.Errorf("the server exited and left %s mounted", stg)
	}

	r.must("mount", "sp", stg)
	loopMount("loop")
	mounted = true
	for _, f := range []string{"f1", "f2", "f3"} {
		if b, err := os.ReadFile(filepath.Join(lvm, f)); err != nil || string(b) != f+"\n" {
			t.Errorf("%s after the restart: %q, %v", f, b, err)
		}
	}
	pid = r.serverPID()
	r.run("stop", "--force")
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i == 300 {
			t.Fatal("stop --force left the server running")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
