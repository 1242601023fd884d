package tests

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBlockKillAndRestore kills the server during nbdcopy and restores.
// Steps: copy image A into a 128 MiB block volume and commit; write a
// pattern at 100 MiB with qemu-io and FLUSH; start nbdcopy from a pipe
// into staging and SIGKILL the server once its first megabyte shows; serve
// again; read the pattern; compare the revision with A; restore the
// revision to a file, to a loop device full of junk (--json) and to
// stdout (also while a server holds the repository, and to a reader that
// leaves early); diff the revision against a second one; lose two shard dirs
// under the served revision, then damage a third.
// Pass: nbdcopy fails; the flushed pattern survived the kill; the revision
// still equals A; the restored file equals A and is sparse; the device and
// stdout carry the same bytes and progress reaches the total; diff names
// changed ranges; with two dirs lost the served revision still equals A;
// with three, reads of lost data get EIO and the connection answers the
// next request (a hole, which needs no shard).
func TestBlockKillAndRestore(t *testing.T) {
	need(t, "nbdcopy", "qemu-io", "qemu-img", "cmp", "losetup")
	r := newRepo(t)
	imgA := filepath.Join(r.work, "a.img")
	makeImage(t, imgA, 128<<20, 21)
	imgB := filepath.Join(r.work, "b.img")
	makeImage(t, imgB, 64<<20, 22)
	r.must("volume", "create", "vm", "--block", "128M")
	sock := filepath.Join(r.work, "nbd.sock")
	serve := func() { r.must("nbd", "serve", "--listen", "unix:"+sock) }
	uri := nbdURI(sock)
	serve()
	sh(t, "nbdcopy", imgA, uri("vm"))
	rev1 := strings.TrimSpace(r.must("commit", "vm", "--tag", "a"))

	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 100M 64k", "-c", "flush", uri("vm"))
	// Kill the server in the middle of an nbdcopy: nbdcopy reads from a
	// pipe; once the first of it shows in staging (another connection
	// reads the shared staging disk) the server is SIGKILLed while nbdcopy
	// still has writes in flight or waits for more input.
	cp := exec.Command("nbdcopy", "-", uri("vm"))
	pipe, err := cp.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	// The input ends only after the kill: written whole before it,
	// nbdcopy could send everything and exit 0 at EOF, never noticing.
	go pipe.Write(bytes.Repeat([]byte{0xcc}, 4<<20))
	for i := 0; ; i++ {
		out, _ := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xcc 0 1M", uri("vm")).CombinedOutput()
		if !strings.Contains(string(out), "Pattern verification failed") && strings.Contains(string(out), "read 1048576/1048576") {
			break
		}
		if i == 600 {
			t.Fatalf("nbdcopy's first megabyte never reached staging:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.killServer()
	pipe.Write(bytes.Repeat([]byte{0xcc}, 8<<20)) // fails once nbdcopy has gone
	pipe.Close()
	if err := cp.Wait(); err == nil {
		t.Error("nbdcopy finished although the server was killed before its input ended")
	}
	for i := 0; i < 50; i++ { // the lock goes with the process
		if res := r.run("list"); res.code == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	serve()
	sh(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 100M 64k", uri("vm"))
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", imgA, uri("vm@"+rev1[:8]))
	sh(t, "nbdcopy", imgB, uri("vm"))
	// The kill lost the copy's unflushed writes; imgB is what staging
	// should hold now, so that is committed as it reads.
	r.must("commit", "vm", "--tag", "b", "--allow-lost")
	r.must("nbd", "stop", "--listen", "unix:"+sock)

	out := filepath.Join(r.work, "restored.img")
	r.must("restore", "vm@a", out)
	sh(t, "cmp", imgA, out)
	var st syscall.Stat_t
	syscall.Stat(out, &st)
	if st.Blocks*512 >= 128<<20 {
		t.Errorf("restored image occupies %d bytes: holes were written out", st.Blocks*512)
	}
	// To a device (holes written as zeros over old contents), with
	// progress as JSON lines.
	dev := filepath.Join(r.work, "dev.img")
	if err := os.WriteFile(dev, bytes.Repeat([]byte{0xee}, 128<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", dev))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	res := r.run("--json", "restore", "vm@a", loop)
	if res.code != 0 {
		t.Fatalf("restore to %s: exit %d\n%s", loop, res.code, res.stderr)
	}
	sh(t, "cmp", imgA, loop)
	if !strings.Contains(res.stderr, `"phase":"restore","done":134217728,"total":134217728`) {
		t.Errorf("restore --json reported no final progress:\n%s", tail(res.stderr, 2000))
	}
	stdout := r.must("restore", "vm@a", "-")
	a, _ := os.ReadFile(imgA)
	if stdout != string(a) {
		t.Errorf("restore to stdout gave %d bytes that differ from the image", len(stdout))
	}
	diff := r.must("diff", "vm@a", "vm@b")
	if !strings.Contains(diff, "disk.img") {
		t.Errorf("block diff names no changed ranges:\n%s", diff)
	}

	// Shards lost under a revision being served: two of six dirs gone,
	// reads reconstruct; a third gone, reads of lost data fail with EIO
	// and the connection keeps serving.
	serve()
	// To stdout while a server (this NBD one) holds the repository; a
	// reader that goes away early ends the restore instead of hanging it;
	// a file tree has no image for stdout.
	if got := r.must("restore", "vm@a", "-"); got != string(a) {
		t.Errorf("restore to stdout through the server gave %d bytes that differ from the image", len(got))
	}
	head := exec.Command(strataBin, "restore", "vm@a", "-")
	head.Env = r.env
	hout, err := head.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := head.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(hout, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	hout.Close()
	if err := head.Wait(); err == nil {
		t.Error("restore to a closed stdout succeeded")
	}
	r.must("volume", "create", "home")
	r.must("commit", "home")
	if res := r.run("restore", "home@latest", "-"); res.code == 0 || !strings.Contains(res.stderr, "block volume") {
		t.Errorf("restore of a file tree to stdout: exit %d\n%s", res.code, res.stderr)
	}
	shards := filepath.Join(r.dir, "shards")
	os.RemoveAll(filepath.Join(shards, "0"))
	os.RemoveAll(filepath.Join(shards, "3"))
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", imgA, uri("vm@a"))
	// A fresh server (no cached chunks), and a third shard dir damaged.
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	r.must("stop")
	filepath.Walk(filepath.Join(shards, "5"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			os.WriteFile(p, make([]byte, fi.Size()), 0o600)
		}
		return nil
	})
	serve()
	// Data sits in the first 3 MiB of every 8 MiB of the image; 5M is a
	// hole, which needs no shard. A data shard holds part of each
	// segment as plain bytes, so a chunk that lies in shard 1 or 2 still
	// reads; which chunks do depends on the order they were stored in, so
	// the data of every 8 MiB is read and one read at least must fail.
	args := []string{"-r", "-f", "raw"}
	for off := 0; off < 128; off += 8 {
		args = append(args, "-c", fmt.Sprintf("read %dM 64k", off), "-c", fmt.Sprintf("read %dM 64k", off+2))
	}
	io, _ := exec.Command("qemu-io", append(args, "-c", "read 5M 64k", uri("vm@a"))...).CombinedOutput()
	if !strings.Contains(string(io), "Input/output error") {
		t.Errorf("reading lost data did not give EIO:\n%s", io)
	}
	if !strings.Contains(string(io), "read 65536/65536 bytes at offset 5242880") {
		t.Errorf("the connection did not survive the first EIO:\n%s", io)
	}
	r.must("nbd", "stop", "--listen", "unix:"+sock)
}

// TestPruneServedRevision: prune defers a revision that NBD serves, as it
// does a mounted one. Before, it removed it under a reading client, whose
// remaining reads returned zeros with no error.
// Steps: two revisions of a block volume; an nbdcopy reads the older one
// and is held after its first 64 KiB; prune --keep-last 1; the copy
// finishes. Then the older revision named by --export, and prune again.
// Pass: the copy equals the image and prune removed nothing both times;
// once serving stops, prune removes it.
func TestPruneServedRevision(t *testing.T) {
	need(t, "nbdcopy")
	r := newRepo(t)
	imgA := filepath.Join(r.work, "a.img")
	makeImage(t, imgA, 16<<20, 31)
	imgB := filepath.Join(r.work, "b.img")
	makeImage(t, imgB, 16<<20, 32)
	r.must("volume", "create", "vm", "--block", "16M")
	sock, uri := r.serveNBD()
	sh(t, "nbdcopy", imgA, uri("vm"))
	r.must("commit", "vm", "--tag", "a")
	sh(t, "nbdcopy", imgB, uri("vm"))
	r.must("commit", "vm")

	cp := exec.Command("nbdcopy", "--requests=1", "--connections=1", uri("vm@a"), "-")
	out, err := cp.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16<<20)
	if _, err := io.ReadFull(out, got[:64<<10]); err != nil {
		t.Fatal(err)
	}
	if res := r.run("prune", "vm", "--keep-last", "1"); res.code != 0 || !strings.Contains(res.stdout+res.stderr, "served") {
		t.Errorf("prune while vm@a is read over NBD: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := io.ReadFull(out, got[64<<10:]); err != nil {
		t.Fatal(err)
	}
	cp.Wait()
	if want, _ := os.ReadFile(imgA); !bytes.Equal(got, want) {
		t.Fatal("the copy of vm@a read while prune ran differs from the image")
	}

	r.must("nbd", "stop", "--listen", "unix:"+sock)
	r.must("nbd", "serve", "--listen", "unix:"+sock, "--export", "vm@a")
	if res := r.run("prune", "vm", "--keep-last", "1"); res.code != 0 || !strings.Contains(res.stdout+res.stderr, "served") {
		t.Errorf("prune while --export names vm@a: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := exec.Command("nbdcopy", uri("vm@a"), filepath.Join(r.work, "a2.img")).CombinedOutput(); err != nil {
		t.Fatalf("vm@a no longer served: %v", err)
	}
	sh(t, "cmp", imgA, filepath.Join(r.work, "a2.img"))
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	if res := r.run("prune", "vm", "--keep-last", "1"); res.code != 0 || !strings.Contains(res.stdout, "removed 1") {
		t.Errorf("prune once serving stopped: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// TestBlockCrashLostBlocks: after a crash, block staging reverts the
// blocks written since the last FLUSH (NBD allows that), and commit must
// then refuse, as it does for files a crash lost, instead of committing
// a mix of the new image and the old one.
// Steps: nbdcopy an image into a block volume without --flush; SIGKILL
// the server; status; commit; restart the server twice and commit again;
// rerun the copy with --flush and commit; commit --allow-lost; commit
// once more; restore the revision.
// Pass: status names the lost blocks and check warns; every commit before --allow-lost
// fails naming the lost blocks and --allow-lost, also after restarts and
// after the rerun copy; --allow-lost commits, the next commit works and
// status is clean; the restored revision equals the image.
func TestBlockCrashLostBlocks(t *testing.T) {
	need(t, "nbdcopy", "cmp")
	r := newRepo(t)
	img := filepath.Join(r.work, "a.img")
	makeImage(t, img, 64<<20, 41)
	r.must("volume", "create", "cr", "--block", "64M")
	sock, uri := r.serveNBD()
	sh(t, "nbdcopy", img, uri("cr"))
	r.killServer()
	// The copy (24 MiB of data, the rest zeroes) fits the disk's 64 MiB
	// write buffer: without a FLUSH, all of it dies with the server.
	if st := r.run("status"); !strings.Contains(st.stdout, "staging of cr lost at least") {
		t.Errorf("status does not show the lost blocks:\n%s%s", st.stdout, st.stderr)
	}
	if res := r.run("check"); res.code == 0 || !strings.Contains(res.stdout, "staging of cr lost") {
		t.Errorf("check after blocks were lost: exit %d, %q; want a warning", res.code, res.stdout)
	}
	refused := func(when string) {
		t.Helper()
		res := r.run("commit", "cr")
		if res.code == 0 || !strings.Contains(res.stderr, "staging of cr lost") || !strings.Contains(res.stderr, "blocks written after the last flush") || !strings.Contains(res.stderr, "--allow-lost") {
			t.Errorf("commit %s: exit %d, stderr %q; want a refusal naming the lost blocks and --allow-lost", when, res.code, res.stderr)
		}
	}
	refused("after the crash")
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	refused("through a new server")
	r.must("stop")
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	refused("after a clean restart")
	sh(t, "nbdcopy", "--flush", img, uri("cr"))
	refused("after the copy ran again")
	r.must("commit", "cr", "--allow-lost", "--tag", "a")
	r.must("commit", "cr")
	if st := r.must("status"); strings.Contains(st, "LOST") {
		t.Errorf("status after commit --allow-lost still shows lost data:\n%s", st)
	}
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	out := filepath.Join(r.work, "restored.img")
	r.must("restore", "cr@a", out)
	sh(t, "cmp", img, out)
}
