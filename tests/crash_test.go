package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/fs"
)

// serverPID reads the PID of the process holding the repository lock.
func (r *repo) serverPID() int {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "lock"))
	if err != nil {
		r.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		r.t.Fatalf("lock holds %q, want a PID", b)
	}
	return pid
}

// committedTree backs up a tree of n small files (WORK/a) into volume
// "home" of a new repository and commits it as revision tag "a", leaving
// staging mounted; it returns the repository, the tree and the mount.
func committedTree(t *testing.T, n int) (*repo, string, string) {
	t.Helper()
	need(t, "rsync")
	r := newRepo(t)
	a := r.mkdir("a")
	makeSmallTree(t, a, n, 1)
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-aH", a+"/", stage+"/")
	r.must("commit", "home", "--tag", "a")
	return r, a, stage
}

// TestServerKilledMidRsync kills the repository server with SIGKILL while
// rsync writes into staging.
// Steps: back up tree A and commit; a second `strata serve` is refused;
// start rsync of a larger tree B into staging; SIGKILL the server
// mid-transfer; mount staging again (strata must clear the stale mount
// itself); finish the rsync; commit.
// Pass: the second server gets exit 11 and a message naming the running
// one; the remount works without a manual umount; revision a still matches
// A exactly; after the second rsync and commit revision b matches B.
func TestServerKilledMidRsync(t *testing.T) {
	r, a, stage := committedTree(t, 200)
	if res := r.run("serve"); res.code != 11 || !strings.Contains(res.stderr, "already running") {
		t.Errorf("second server: exit %d, stderr %q; want exit 11 naming the running server", res.code, res.stderr)
	}

	b := r.mkdir("b")
	makeSmallTree(t, b, 3000, 2)
	cmd := exec.Command("rsync", "-aH", "--delete", b+"/", stage+"/")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	r.killServer()
	cmd.Wait() // rsync fails or finishes; either way the server is gone

	// Remount over the stale mount: strata clears it itself.
	r.must("mount", "home", stage)
	// Files whose data the crash lost read as zeros until rsync sends
	// them again: a commit before that is refused.
	log, _ := os.ReadFile(filepath.Join(r.dir, "server.log"))
	if strings.Contains(string(log), "whose data a crash lost") {
		if res := r.run("commit", "home"); res.code == 0 || !strings.Contains(res.stderr, "--allow-lost") {
			t.Errorf("commit of staging with files a crash lost: exit %d, stderr %q; want a refusal", res.code, res.stderr)
		}
	} else {
		t.Log("the crash lost no file's data this time; the commit refusal is not exercised")
	}
	sh(t, "rsync", "-aH", "--delete", b+"/", stage+"/")
	r.must("commit", "home", "--tag", "b")
	r.must("umount", stage)

	if out := itemize(t, a, r.mountRevision("home@a")); out != "" {
		t.Errorf("revision a changed after the server was killed:\n%s", out)
	}
	if out := itemize(t, b, r.mountRevision("home@b")); out != "" {
		t.Errorf("revision b differs from its source:\n%s", out)
	}
}

// killServer SIGKILLs the repository server and waits until it is gone.
func (r *repo) killServer() {
	r.t.Helper()
	pid := r.serverPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.t.Fatalf("kill server %d: %v", pid, err)
	}
	for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerKilledBeforeCommit kills the server between a finished rsync
// and the commit, as an OOM kill or a reboot would in a backup script
// (`rsync ... && strata commit`).
// Steps: commit tree A; rsync tree B into staging and SIGKILL the server
// at once; commit; rsync B again; commit. Then write one more file, wait
// until status says staging holds nothing unsaved, SIGKILL again, remount.
// Pass: the first commit after the kill is refused, naming the changes a
// crash may have rolled back and how to go on, and status shows it (QA
// saw files come back empty or vanish and the commit succeed); after the
// rerun the commit works and the revision matches B. A file written
// before the background sync survives the second kill whole, and the
// commit after it is not refused.
func TestServerKilledBeforeCommit(t *testing.T) {
	r, _, stage := committedTree(t, 50)
	b := r.mkdir("b")
	makeSmallTree(t, b, 400, 3)
	sh(t, "rsync", "-aH", "--delete", b+"/", stage+"/")
	r.killServer()

	res := r.run("commit", "home")
	if res.code == 0 || !strings.Contains(res.stderr, "may be lost") && !strings.Contains(res.stderr, "may have lost") || !strings.Contains(res.stderr, "backup into staging again") {
		t.Fatalf("commit after the server died with staging unsaved: exit %d, stderr %q; want a refusal saying what to do", res.code, res.stderr)
	}
	if out := r.must("status"); !strings.Contains(out, "LOST DATA: staging of home may have lost the changes") {
		t.Errorf("status after the crash does not show the loss:\n%s", out)
	}
	r.must("mount", "home", stage)
	sh(t, "rsync", "-aH", "--delete", b+"/", stage+"/")
	r.must("commit", "home", "--tag", "b")
	rb := r.mkdir("mnt/rb")
	r.must("mount", "home@b", rb)
	if out := itemize(t, b, rb); out != "" {
		t.Errorf("revision b differs from its source:\n%s", out)
	}
	r.must("umount", rb)

	// The background sync saves staging soon after writes stop.
	want := strings.Repeat("saved in the background\n", 1000)
	if err := os.WriteFile(filepath.Join(stage, "late"), []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for strings.Contains(r.must("--json", "status"), "unsaved_since") {
		if time.Now().After(deadline) {
			t.Fatal("staging still unsaved a minute after the last write")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.killServer()
	r.must("mount", "home", stage)
	if got, err := os.ReadFile(filepath.Join(stage, "late")); err != nil || string(got) != want {
		t.Errorf("a file saved in the background before the crash: %d bytes, %v; want its %d bytes", len(got), err, len(want))
	}
	if res := r.run("commit", "home"); res.code != 0 {
		t.Errorf("commit after a crash with nothing unsaved: exit %d, stderr %q", res.code, res.stderr)
	}
}

// TestServerKilledWhileWarming kills the server while the staging warmer,
// one of the server's own threads, waits for a directory listing on the
// server's own mount. That thread then waits uninterruptibly for a reply
// only the dead server could send, so the process could not finish
// exiting: a zombie holding the repository lock, and a mount on which
// every access hung. The server's guard process must abort the
// connection so it exits, and the next mount must work.
// Steps: back up a tree and commit; remount staging with READDIRPLUS
// replies held 3 s (fault injection); stat a file, which starts the
// warmer; SIGKILL the server while the warmer's listing is held; the
// server must be gone within 10 s and the stat must return; remount and
// staging still matches the tree.
func TestServerKilledWhileWarming(t *testing.T) {
	r, a, stage := committedTree(t, 300)
	r.must("umount", stage)

	if res := r.runEnv([]string{"STRATA_TEST_READDIR_DELAY=3s"}, "mount", "home", stage); res.code != 0 {
		t.Fatalf("mount: exit %d: %s", res.code, res.stderr)
	}
	pid := r.serverPID()
	stat := exec.Command("stat", filepath.Join(stage, "d0", "e0", "f0"))
	if err := stat.Start(); err != nil {
		t.Fatal(err)
	}
	statDone := make(chan struct{})
	go func() { stat.Wait(); close(statDone) }()
	time.Sleep(time.Second) // the warmer's first READDIRPLUS is now held in the server
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill server %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
		status, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		t.Errorf("server %d still exists 10 s after SIGKILL:\n%s", pid, status)
		abortMount(t, stage) // so the test run can go on
	}
	select {
	case <-statDone:
	case <-time.After(10 * time.Second):
		t.Errorf("stat on the dead server's mount still waits 10 s after SIGKILL")
		abortMount(t, stage)
		<-statDone
	}

	r.must("mount", "home", stage)
	if out := itemize(t, a, stage); out != "" {
		t.Errorf("staging after the crash differs from the committed tree:\n%s", out)
	}
}

// abortMount aborts the FUSE connection of the mount at dir.
func abortMount(t *testing.T, dir string) {
	t.Helper()
	conn, err := fs.ConnAt(dir)
	if err == nil {
		err = fs.AbortConn(conn)
	}
	if err != nil {
		t.Log(err)
	}
}

// makeSmallTree writes n files of a few KiB to 1 MiB in nested dirs.
// File i has the same size whatever the seed, so each file gets an mtime
// that depends on the seed: rsync's quick check compares whole seconds,
// and trees of two seeds written within one second would otherwise look
// unchanged to it wherever their files line up (CI saw that: tree B
// rsynced over tree A kept A's files).
func makeSmallTree(t testing.TB, root string, n int, seed int64) {
	t.Helper()
	data := make([]byte, 1<<20)
	fillRandom(data, uint64(seed))
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seed) * 24 * time.Hour)
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, "d"+strconv.Itoa(i%17), "e"+strconv.Itoa(i%5))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		size := 1024 + (i*7919)%(64<<10)
		if i%50 == 0 {
			size = 1 << 20
		}
		off := (i * 4099) % (len(data) - size + 1)
		name := filepath.Join(dir, "f"+strconv.Itoa(i))
		if err := os.WriteFile(name, data[off:off+size], 0o644); err != nil {
			t.Fatal(err)
		}
		mtime := base.Add(time.Duration(i)*time.Second + time.Duration(i)*time.Microsecond)
		if err := os.Chtimes(name, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// writeRandom writes n bytes of fillRandom(seed) to path.
func writeRandom(t testing.TB, path string, n int, seed uint64) {
	t.Helper()
	buf := make([]byte, n)
	fillRandom(buf, seed)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fillRandom fills b with incompressible bytes determined by seed
// (xorshift64), so runs are repeatable.
func fillRandom(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

// TestDeadMountsAfterKill: mounts a killed server leaves behind are
// listed and cleared, and strata umount still refuses what is not a
// strata mount of the repository.
// Steps: mount staging of home, commit; mount home@a read-only and the
// staging of a second volume; SIGKILL the server; mount home's staging
// again (a new server); strata status (text and --json); strata umount
// the revision mount, a plain directory and a tmpfs; strata stop, then
// strata umount the second staging mount with no server running and
// the tmpfs again.
// Pass: the remount works; status lists the revision and second staging
// mounts as dead with the way out, and home's staging as live, not dead;
// umount of the dead revision mount exits 0 saying it cleared a dead
// mount, and it is gone from the mount table; the plain directory and the
// tmpfs are refused (exit 1) and the tmpfs stays mounted, with or without
// a server; without a server the second staging mount is cleared (exit 0)
// and status lists no dead mount.
func TestDeadMountsAfterKill(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	if err := os.WriteFile(filepath.Join(stage, "a"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.must("commit", "home", "--tag", "a")
	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@a", rev)
	r.must("volume", "create", "other")
	other := r.mkdir("mnt/other")
	r.must("mount", "other", other)
	plain := r.mkdir("plain")
	tmpfs := r.mkdir("tmpfs")
	sh(t, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmpfs)
	t.Cleanup(func() { syscall.Unmount(tmpfs, syscall.MNT_DETACH) })

	pid := r.serverPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill server %d: %v", pid, err)
	}
	for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	r.must("mount", "home", stage)

	st := r.must("status")
	for _, mp := range []string{rev, other} {
		want := "mount " + mp + " dead (the server that served it stopped; 'strata umount " + mp + "' clears it"
		if !strings.Contains(st, want) {
			t.Errorf("status after the kill does not list %s as dead; want a line with %q:\n%s", mp, want, st)
		}
	}
	if !strings.Contains(st, "mount "+stage+" home (rw)") || strings.Contains(st, "mount "+stage+" dead") {
		t.Errorf("status after the remount: want %s live, not dead:\n%s", stage, st)
	}
	var doc struct {
		DeadMounts []struct {
			Mountpoint string `json:"mountpoint"`
			ReadOnly   bool   `json:"read_only"`
		} `json:"dead_mounts"`
	}
	if err := json.Unmarshal([]byte(r.must("--json", "status")), &doc); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if len(doc.DeadMounts) != 2 || doc.DeadMounts[0].Mountpoint != other || doc.DeadMounts[0].ReadOnly ||
		doc.DeadMounts[1].Mountpoint != rev || !doc.DeadMounts[1].ReadOnly {
		t.Errorf("status --json dead_mounts = %+v; want %s (rw) and %s (ro)", doc.DeadMounts, other, rev)
	}

	res := r.run("umount", rev)
	if res.code != 0 || !strings.Contains(res.stdout, "cleared dead mount "+rev) {
		t.Errorf("umount of the dead revision mount: exit %d, stdout %q, stderr %q; want exit 0 saying it cleared a dead mount", res.code, res.stdout, res.stderr)
	}
	if mounted(t, rev) {
		t.Errorf("%s is still in the mount table after strata umount", rev)
	}
	refused := func(dir, want string) {
		t.Helper()
		res := r.run("umount", dir)
		if res.code != 1 || !strings.Contains(res.stderr, want) {
			t.Errorf("umount %s: exit %d, stderr %q; want exit 1 saying %q", dir, res.code, res.stderr, want)
		}
	}
	refused(plain, "is not a mount point")
	refused(tmpfs, "is not a strata mount")

	r.must("stop")
	refused(tmpfs, "is not a strata mount")
	if !mounted(t, tmpfs) {
		t.Errorf("strata umount without a server unmounted the tmpfs at %s", tmpfs)
	}
	res = r.run("umount", other)
	if res.code != 0 || !strings.Contains(res.stdout, "cleared dead mount "+other) {
		t.Errorf("umount of the dead staging mount without a server: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	if st := r.must("status"); strings.Contains(st, " dead ") {
		t.Errorf("status lists dead mounts after they were cleared:\n%s", st)
	}
}

// mounted reports whether dir is a mount point in the mount table.
func mounted(t testing.TB, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestKilledAfterDedupKeepsReferences: a file whose chunks deduplicate
// against an older revision, killed with the server after its extent map
// reached the index but before the next durable point, must keep its
// chunks once that older revision is pruned.
// Steps: write file a (3 MiB, incompressible) into staging, commit; copy a
// to b inside staging (every chunk of b deduplicates against a's); wait
// 1 s (staging records reach the index within 50 ms, the background sync
// comes 2 s after the last write); SIGKILL the server; remount; b must
// read back whole (else the kill missed the window and the test says so);
// remove a, commit; prune --keep-last 1 (removes the first revision,
// collects garbage); mount the latest revision.
// Pass: b reads back equal to a. Before the fix the copy's references
// were only in the server's memory until the next durable point: the
// kill lost them, the prune dropped the chunks' last counted reference,
// GC deleted them, and b read as EIO.
func TestKilledAfterDedupKeepsReferences(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	want := make([]byte, 3<<20)
	fillRandom(want, 77)
	if err := os.WriteFile(filepath.Join(stage, "a"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	r.must("commit", "home")
	if err := os.WriteFile(filepath.Join(stage, "b"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	r.killServer()
	r.must("mount", "home", stage)
	if got, err := os.ReadFile(filepath.Join(stage, "b")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("b after the kill: %d bytes, %v; the kill came outside the window this test needs (the copy's records in the index, no durable point since)", len(got), err)
	}
	if err := os.Remove(filepath.Join(stage, "a")); err != nil {
		t.Fatal(err)
	}
	r.must("commit", "home")
	r.must("umount", stage)
	r.must("prune", "home", "--keep-last", "1")
	got, err := os.ReadFile(filepath.Join(r.mountRevision("home@latest"), "b"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("b in the latest revision after pruning the first: %d bytes, %v; want its %d bytes", len(got), err, len(want))
	}
}

// TestKilledAfterDedupKeepsBlockReferences is the same for a block volume,
// whose records skip the staging batches: blocks written without FLUSH
// go to the index once 64 MiB are buffered.
// Steps: write image A (96 MiB, incompressible) into disk.img with fsync,
// commit; write A again without fsync (every block deduplicates against
// the revision's); wait 1 s; SIGKILL the server; remount; commit (with
// --allow-lost if the lost tail refuses it); prune --keep-last 1; mount
// the latest revision.
// Pass: its image starts with A. Before the fix it read as EIO.
func TestKilledAfterDedupKeepsBlockReferences(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "vm", "--block", "128M")
	stage := r.mkdir("mnt/vm")
	r.must("mount", "vm", stage)
	a := filepath.Join(r.work, "a.img")
	writeRandom(t, a, 96<<20, 78)
	disk := filepath.Join(stage, "disk.img")
	sh(t, "dd", "if="+a, "of="+disk, "bs=1M", "conv=notrunc,fsync", "status=none")
	r.must("commit", "vm")
	sh(t, "dd", "if="+a, "of="+disk, "bs=1M", "conv=notrunc", "status=none")
	time.Sleep(time.Second)
	r.killServer()
	r.must("mount", "vm", stage)
	if res := r.run("commit", "vm"); res.code != 0 {
		r.must("commit", "vm", "--allow-lost")
	}
	r.must("umount", stage)
	r.must("prune", "vm", "--keep-last", "1")
	mnt := r.mountRevision("vm@latest")
	want, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if n, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("image in the latest revision after pruning the first: %d bytes read, %v, equal %v", n, err, bytes.Equal(got[:n], want[:n]))
	}
}
