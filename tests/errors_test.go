package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadInputErrors: every bad input gets a clear error naming the cause
// and nothing stored changes.
// Steps: one repository with a volume and two revisions; then each case.
// Pass: each case exits non-zero with a message naming the cause; after
// all of them both revisions are still listed (and no other) and the
// second still reads; check refuses a --crit age beyond its range.
func TestBadInputErrors(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	os.WriteFile(filepath.Join(stage, "a"), []byte("one\n"), 0o644)
	r.must("commit", "home", "--tag", "daily")
	os.WriteFile(filepath.Join(stage, "a"), []byte("two\n"), 0o644)
	r.must("commit", "home", "--tag", "daily")
	r.must("umount", stage)
	full := r.mkdir("full")
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing mountpoint", []string{"mount", "home", filepath.Join(r.work, "nope")}, "does not exist"},
		{"non-empty mountpoint", []string{"mount", "home", full}, "not empty"},
		{"unknown volume commit", []string{"commit", "nosuch"}, "no volume named"},
		{"unknown volume mount", []string{"mount", "nosuch@latest", r.mkdir("m1")}, "no volume named"},
		{"spec matches nothing", []string{"mount", "home@deadbeef", r.mkdir("m2")}, "no revision of home matches"},
		{"tag too far back", []string{"mount", "home@daily~5", r.mkdir("m3")}, "no revision of home matches"},
		{"bad duration", []string{"prune", "--keep-within", "7x", "--dry-run"}, "7x"},
		{"empty policy for a volume", []string{"prune", "home"}, "empty retention policy"},
		{"bad size", []string{"volume", "create", "vm", "--block", "12Q"}, "size"},
		{"existing volume", []string{"volume", "create", "home"}, "already exists"},
		{"volume with revisions", []string{"volume", "rm", "home"}, "has 2 revisions"},
		{"bad shards", []string{"--repo", filepath.Join(r.work, "other"), "init", "--shards", "4+x"}, "--shards"},
		{"wrong shard dir count", []string{"--repo", filepath.Join(r.work, "other"), "init", "--shard-dir", "/tmp/a"}, "needs 6 shard dirs"},
		{"no repository", []string{"--repo", filepath.Join(r.work, "none"), "list"}, "not a strata repository"},
		{"no repository to mount", []string{"--repo", filepath.Join(r.work, "none"), "mount", "home", r.mkdir("m4")}, "not a strata repository"},
		{"unknown schedule", []string{"commit", "home", "--schedule", "nosuch"}, "nosuch"},
		{"diff with a path", []string{"diff", "home@~1:/a", "home@latest"}, "without a :PATH"},
		{"diff of staging", []string{"diff", "home@latest", "home"}, "staging cannot be compared"},
		{"future revision time", []string{"commit", "home", "--time", "2999-01-01T00:00:00Z"}, "in the future"},
		// The zero time was taken for "no --time" and became now.
		{"zero revision time", []string{"commit", "home", "--time", "0001-01-01T00:00:00Z"}, "before 1970-01-01"},
		{"revision time before 1970", []string{"commit", "home", "--time", "1969-12-31 23:59:59"}, "before 1970-01-01"},
		// Ages past time.Duration's 292 years wrapped around to the latest.
		{"age of 293 years", []string{"diff", "home@293y", "home@latest"}, `age "293y" is out of range`},
		{"age of 2562048 hours", []string{"diff", "home@2562048h", "home@latest"}, `age "2562048h" is out of range`},
		{"age of 106752 days", []string{"diff", "home@106752d", "home@latest"}, `age "106752d" is out of range`},
		{"age of 292 years", []string{"diff", "home@292y", "home@latest"}, "no revision of home matches"},
		{"bad tag", []string{"commit", "home", "--tag", "daily,a/b"}, `tag "a/b" contains '/'`},
		// An unset $DEST in a script: not the working directory.
		{"empty restore destination", []string{"restore", "home@latest", ""}, "DEST is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := r.run(c.args...)
			if res.code == 0 {
				t.Fatalf("strata %s succeeded; want an error mentioning %q", strings.Join(c.args, " "), c.want)
			}
			if !strings.Contains(res.stderr, c.want) {
				t.Errorf("strata %s: stderr %q does not mention %q", strings.Join(c.args, " "), res.stderr, c.want)
			}
		})
	}

	// Writes into a revision mount fail with EROFS.
	ro := r.mkdir("mnt/ro")
	r.must("mount", "home@latest", ro)
	if err := os.WriteFile(filepath.Join(ro, "b"), []byte("x"), 0o644); !errorsIs(err, syscall.EROFS) {
		t.Errorf("create in a revision mount: %v, want EROFS", err)
	}
	b, err := os.ReadFile(filepath.Join(ro, "a"))
	if err != nil || string(b) != "two\n" {
		t.Errorf("latest revision reads %q, %v", b, err)
	}
	r.must("umount", ro)
	if out := r.must("list", "home"); !strings.Contains(out, "2 revisions,") {
		t.Errorf("after the bad inputs list shows other than 2 revisions:\n%s", out)
	}
	// check said "--crit 300y is below --warn 200y".
	if res := r.run("check", "--warn", "200y", "--crit", "300y"); res.code != 3 || !strings.Contains(res.stdout, `bad --crit: age "300y" is out of range`) {
		t.Errorf("check --warn 200y --crit 300y: exit %d, stdout %q; want 3 and the range", res.code, res.stdout)
	}
}

// TestMountConflicts: requests that clash with what the server has
// mounted are refused with the reason.
// Steps: mount staging of home; mount it again elsewhere; mount every
// volume (--all); remove a volume that nothing mounts itself, and one
// that does not exist.
// Pass: the second staging mount fails naming the first mountpoint (two
// kernel mounts of one staging would each cache what the other changed),
// and the first still takes writes; volume rm names the --all mount as
// the reason, and an unknown volume is reported as unknown.
func TestMountConflicts(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	r.must("volume", "create", "other")
	second := r.mkdir("mnt/second")
	res := r.run("mount", "home", second)
	if res.code == 0 || !strings.Contains(res.stderr, "already mounted at "+stage) {
		t.Errorf("second staging mount: exit %d, stderr %q; want a refusal naming %s", res.code, res.stderr, stage)
	}
	if err := os.WriteFile(filepath.Join(stage, "a"), []byte("one\n"), 0o644); err != nil {
		t.Errorf("write into the first staging mount after the refusal: %v", err)
	}
	all := r.mkdir("mnt/all")
	r.must("mount", "--all", all)
	// Mounting over a strata mount says so, not just "not empty".
	if res := r.run("mount", "other", all); res.code == 0 || !strings.Contains(res.stderr, "already a strata mount") {
		t.Errorf("mount over the --all mount: exit %d, stderr %q; want it named a strata mount", res.code, res.stderr)
	}
	if res := r.run("volume", "rm", "other"); res.code == 0 || !strings.Contains(res.stderr, "mount of every volume at "+all) {
		t.Errorf("volume rm under an --all mount: exit %d, stderr %q; want the --all mount named", res.code, res.stderr)
	}
	if res := r.run("volume", "rm", "nosuch"); res.code == 0 || !strings.Contains(res.stderr, `no volume named "nosuch"`) {
		t.Errorf("volume rm of an unknown volume: exit %d, stderr %q", res.code, res.stderr)
	}
	r.must("umount", all)
	r.must("umount", stage)
	r.must("mount", "home", second) // free again once unmounted
	if b, err := os.ReadFile(filepath.Join(second, "a")); err != nil || string(b) != "one\n" {
		t.Errorf("staging remounted elsewhere reads %q, %v", b, err)
	}
	// Named through a symlink, the mount is still the server's own (it
	// was refused as "a live strata mount this server does not serve").
	link := filepath.Join(r.work, "via")
	if err := os.Symlink(filepath.Dir(second), link); err != nil {
		t.Fatal(err)
	}
	if res := r.run("umount", filepath.Join(link, filepath.Base(second))); res.code != 0 {
		t.Errorf("umount through a symlinked path: exit %d, stderr %q", res.code, res.stderr)
	}
}

// tmpfsRepo makes a repository whose six shard dirs share one tmpfs of
// size (mount -o size=).
func tmpfsRepo(t *testing.T, size string) *repo {
	t.Helper()
	fsDir := tmpfs(t, t.TempDir(), size)
	var args []string
	for i := 0; i < 6; i++ {
		args = append(args, "--shard-dir", filepath.Join(fsDir, "s", string(rune('0'+i))))
	}
	return newRepo(t, args...)
}

// TestStopWithFullDisk stops the server while staging holds data the
// full shard filesystems cannot take.
// Steps: rsync 120 MiB of random data into staging on a 96 MiB tmpfs
// (ENOSPC); strata stop.
// Pass: stop returns within a minute (not after the 3-minute shutdown
// limit), exits 1 saying the server did not stop cleanly and why, and
// leaves no mount behind; the next mount works.
func TestStopWithFullDisk(t *testing.T) {
	need(t, "rsync")
	r := tmpfsRepo(t, "96m")
	src := r.mkdir("src")
	buf := make([]byte, 1<<20)
	for i := 0; i < 120; i++ {
		fillRandom(buf, uint64(i))
		os.WriteFile(filepath.Join(src, "f"+strconv.Itoa(i)), buf, 0o644)
	}
	stage := r.mountNewVolume("home")
	if out, err := exec.Command("rsync", "-a", src+"/", stage+"/").CombinedOutput(); err == nil {
		t.Fatalf("rsync of 120 MiB into a repository on 96 MiB succeeded:\n%s", out)
	}
	start := time.Now()
	res := r.run("stop")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("stop took %v", took)
	}
	if res.code != 1 || !strings.Contains(res.stderr, "not cleanly") || !strings.Contains(res.stderr, "no space") {
		t.Errorf("stop with unflushable staging: exit %d, stderr %q; want exit 1 naming the full disk", res.code, res.stderr)
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), stage) {
		t.Errorf("stop left %s mounted", stage)
	}
	r.must("mount", "home", stage)
	r.must("umount", stage)
}

// TestFullDisk fills the shard filesystems while rsync writes.
// Steps: init with six shard dirs on a 96 MiB tmpfs; back up a small tree
// and commit; rsync 200 MiB of random data into staging; then free space
// with strata alone, as the error's hint says: remove the big data from
// the source, rsync --delete, commit, prune to the last revision; back up
// 8 MiB of new data; scrub.
// Pass: rsync fails with "No space left on device"; the first revision
// still matches its source; the commit and the prune after it work on
// the full filesystem (data stops short of a reserve that they use), the
// new data goes in, and scrub finds no damage.
func TestFullDisk(t *testing.T) {
	need(t, "rsync")
	r := tmpfsRepo(t, "96m")
	src := r.mkdir("src")
	makeSmallTree(t, src, 50, 12)
	first := r.mkdir("first")
	sh(t, "rsync", "-a", src+"/", first+"/")
	stage := r.mountNewVolume("home")
	// df on staging shows what backups may use: free space less the
	// reserve (two 16 MiB segments) kept for commit, prune and GC.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(stage, &sfs); err != nil {
		t.Fatal(err)
	}
	if held := int64(sfs.Bfree-sfs.Bavail) * sfs.Bsize; held < 32<<20-sfs.Bsize || held > 32<<20 {
		t.Errorf("statfs of staging: free %d blocks, available %d: %d bytes held back, want the 32 MiB reserve", sfs.Bfree, sfs.Bavail, held)
	}
	sh(t, "rsync", "-a", src+"/", stage+"/")
	r.must("commit", "home", "--tag", "small")

	big := filepath.Join(src, "big")
	os.MkdirAll(big, 0o755)
	buf := make([]byte, 1<<20)
	for i := 0; i < 200; i++ {
		fillRandom(buf, uint64(i)) // incompressible
		os.WriteFile(filepath.Join(big, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), buf, 0o644)
	}
	out, err := exec.Command("rsync", "-a", src+"/", stage+"/").CombinedOutput()
	if err == nil {
		t.Fatalf("rsync of 200 MiB into a repository on 96 MiB succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "No space left on device") {
		t.Errorf("rsync failed without ENOSPC:\n%s", tail(string(out), 2000))
	}
	// The user frees space through strata, as the error's hint says.
	os.RemoveAll(big)
	sh(t, "rsync", "-a", "--delete", src+"/", stage+"/")
	r.must("commit", "home", "--tag", "after")
	r.must("umount", stage)

	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@small", rev)
	if out := itemize(t, first, rev); out != "" {
		// Once (1 run in ~45) a directory's mtime differed here. Say
		// whether the plain copy or the revision is off from the source:
		// rsync's last pass over directory times compares whole seconds,
		// and this tree's directories are made in the second it is copied.
		t.Errorf("first revision changed after the disk filled:\n%s\nsource against the plain copy:\n%s\n%s",
			out, itemize(t, src, first), sh(t, "sh", "-c", "stat -c '%n %y' "+src+"/d* "+first+"/d* "+rev+"/d*"))
	}
	r.must("umount", rev)
	r.must("prune", "--keep-last", "1")

	// There is room again for new data.
	more := filepath.Join(src, "more")
	os.MkdirAll(more, 0o755)
	for i := 0; i < 8; i++ {
		fillRandom(buf, uint64(1000+i))
		os.WriteFile(filepath.Join(more, "m"+strconv.Itoa(i)), buf, 0o644)
	}
	r.must("mount", "home", stage)
	sh(t, "rsync", "-a", "--delete", src+"/", stage+"/")
	r.must("commit", "home", "--tag", "more")
	if out := itemize(t, src, stage); out != "" {
		t.Errorf("staging after freeing space differs from the source:\n%s", out)
	}
	r.must("umount", stage)
	if out := r.must("scrub"); !strings.Contains(out, "no damage") {
		t.Errorf("scrub after a full disk:\n%s", out)
	}
}

// TestBlockFullDisk fills the shard filesystems through a block volume's
// staging disk, then makes room the way a user of dd would.
// Steps: a 192 MiB block volume in a repository on a 96 MiB tmpfs; dd 8
// MiB of random data at the start, fsync, commit; dd 120 MiB more behind
// it (ENOSPC); punch a hole over those 120 MiB (fallocate); commit; mount
// the new revision.
// Pass: the second dd fails with ENOSPC; the punch and the commit work on
// the full store (zeroed blocks need no room); the revision holds the
// first 8 MiB and zeros after.
func TestBlockFullDisk(t *testing.T) {
	need(t, "dd", "fallocate", "cmp")
	r := tmpfsRepo(t, "96m")
	r.must("volume", "create", "vm", "--block", "192M")
	stage := r.mkdir("mnt/stage")
	r.must("mount", "vm", stage)
	disk := filepath.Join(stage, "disk.img")
	first := filepath.Join(r.work, "first.bin")
	buf := make([]byte, 8<<20)
	fillRandom(buf, 77)
	os.WriteFile(first, buf, 0o644)
	sh(t, "dd", "if="+first, "of="+disk, "bs=1M", "conv=notrunc,fsync", "status=none")
	r.must("commit", "vm")

	big := filepath.Join(r.work, "big.bin")
	buf = make([]byte, 120<<20)
	fillRandom(buf, 78)
	os.WriteFile(big, buf, 0o644)
	out, err := exec.Command("dd", "if="+big, "of="+disk, "bs=1M", "seek=16", "conv=notrunc,fsync", "status=none").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("dd of 120 MiB into a repository on 96 MiB: %v\n%s; want ENOSPC", err, out)
	}
	if out, err := exec.Command("fallocate", "--punch-hole", "--offset", "16MiB", "--length", "120MiB", disk).CombinedOutput(); err != nil {
		t.Fatalf("punch: %v %s", err, out)
	}
	r.must("commit", "vm")
	r.must("umount", stage)

	rev := r.mkdir("mnt/rev")
	r.must("mount", "vm@latest", rev)
	rimg := filepath.Join(rev, "disk.img")
	sh(t, "cmp", "-n", "8MiB", first, rimg)
	sh(t, "cmp", "-i", "8MiB:0", "-n", "184MiB", rimg, "/dev/zero")
	r.must("umount", rev)
}

// TestSmallRepoFilesystem puts the repository directory (index, spool,
// segment scratch files) on a filesystem smaller than a file being backed
// up, with the shards elsewhere, as on a server whose repository sits on
// a small root filesystem and stores its shards on a data disk.
// Steps: repository on a 200 MiB tmpfs; rsync a 300 MiB file and a few
// small ones into staging; commit; mount the revision.
// Pass: rsync and commit succeed, the revision's file is byte-identical,
// and the tmpfs never ran full (before, the spool held the whole file:
// rsync got ENOSPC, and once the tmpfs was full the index's memory-mapped
// files killed the server and every later open with SIGBUS).
func TestSmallRepoFilesystem(t *testing.T) {
	need(t, "rsync")
	work := t.TempDir()
	fsDir := tmpfs(t, work, "200m")
	args := []string{"--shards", "2+1"}
	for i := 0; i < 3; i++ {
		args = append(args, "--shard-dir", filepath.Join(work, "shards", strconv.Itoa(i)))
	}
	r := newRepoAt(t, work, filepath.Join(fsDir, "repo"), args...)

	src := r.mkdir("src")
	big := filepath.Join(src, "big.img")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 300; i++ {
		fillRandom(buf, uint64(i)+1000)
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for i := 0; i < 5; i++ {
		os.WriteFile(filepath.Join(src, "small"+strconv.Itoa(i)), []byte(strings.Repeat("x", i*1000)), 0o644)
	}
	stage := r.mountNewVolume("srv")
	full := make(chan bool, 1)
	stop := make(chan struct{})
	go func() { // watch the tmpfs while rsync writes
		seen := false
		for {
			var st syscall.Statfs_t
			if syscall.Statfs(fsDir, &st) == nil && st.Bavail*uint64(st.Bsize) < 8<<20 {
				seen = true
			}
			select {
			case <-stop:
				full <- seen
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	out, err := exec.Command("rsync", "-a", src+"/", stage+"/").CombinedOutput()
	close(stop)
	if err != nil {
		t.Fatalf("rsync of a 300 MiB file with the repository on 200 MiB: %v\n%s", err, out)
	}
	if <-full {
		t.Error("the repository's filesystem had less than 8 MiB free during the rsync")
	}
	r.must("commit", "srv")
	rev := r.mkdir("mnt/rev")
	r.must("mount", "srv@latest", rev)
	if got, want := fileSum(t, filepath.Join(rev, "big.img")), fileSum(t, big); got != want {
		t.Fatalf("revision's big.img: sum %s, want %s", got, want)
	}
	r.must("umount", rev)
	r.must("status")
}

// TestPruneWithLostIndex: garbage collection must not take segments the
// index does not know for garbage when the index itself is gone.
// Steps: commit a tree; stop; delete REPO/index; scrub; prune --keep-last 1;
// repair --rebuild-index.
// Pass: scrub and prune fail naming repair --rebuild-index, every shard file is
// still there, and the rebuilt repository lists the revision again
// (before, prune deleted every shard file and exited 0).
// A damaged index table must stop restore (which read past it and left
// files out with exit 0), and repair --rebuild-index must bring back
// everything from the shards.
func TestDamagedIndex(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	for d := 0; d < 20; d++ {
		dir := filepath.Join(src, "d"+strconv.Itoa(d))
		os.Mkdir(dir, 0o755)
		for i := 0; i < 100; i++ {
			writeRandom(t, filepath.Join(dir, "file-with-a-longish-name-"+strconv.Itoa(i)), 512+i, uint64(d*1000+i))
		}
	}
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-a", src+"/", stage+"/")
	r.must("commit", "home")
	r.must("stop")

	// Flip bytes in the middle of the largest table, as bit rot would.
	tables, _ := filepath.Glob(filepath.Join(r.dir, "index", "*.sst"))
	var victim string
	var size int64
	for _, p := range tables {
		if fi, err := os.Stat(p); err == nil && fi.Size() > size {
			victim, size = p, fi.Size()
		}
	}
	if size < 64<<10 {
		t.Fatalf("largest index table %s is %d bytes: too small to damage a block in its middle", victim, size)
	}
	f, err := os.OpenFile(victim, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 16)
	fillRandom(junk, 7)
	if _, err := f.WriteAt(junk, size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := filepath.Join(r.work, "out")
	res := r.run("restore", "home@latest", out)
	if res.code == 0 || !strings.Contains(res.stderr, "damaged") || !strings.Contains(res.stderr, "repair --rebuild-index") {
		t.Fatalf("restore with a damaged index: exit %d, want a refusal naming the damage and the repair\n%s%s", res.code, res.stdout, res.stderr)
	}
	r.must("repair", "--rebuild-index")
	if kept, _ := filepath.Glob(filepath.Join(r.dir, "index.damaged-*")); len(kept) != 1 {
		t.Errorf("the damaged index was not kept beside the new one: %v", kept)
	}
	os.RemoveAll(out)
	r.must("restore", "home@latest", out)
	if diff := itemize(t, src, out); diff != "" {
		t.Fatalf("restore after the rebuild differs from the source:\n%s", diff)
	}
	if res := r.run("scrub"); res.code != 0 {
		t.Fatalf("scrub after the rebuild: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func TestPruneWithLostIndex(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	for i := 0; i < 20; i++ {
		writeRandom(t, filepath.Join(src, "f"+strconv.Itoa(i)), 100<<10, uint64(i)+500)
	}
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-a", src+"/", stage+"/")
	rev := strings.TrimSpace(r.must("commit", "home"))
	r.must("stop")
	count := func() int {
		n := 0
		filepath.Walk(filepath.Join(r.dir, "shards"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	before := count()
	if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
		t.Fatal(err)
	}
	if res := r.run("scrub"); res.code == 0 || !strings.Contains(res.stdout, "rebuild-index") {
		t.Errorf("scrub with the index gone: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res := r.run("prune", "--keep-last", "1")
	if res.code == 0 || !strings.Contains(res.stderr, "rebuild-index") {
		t.Errorf("prune with the index gone: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if after := count(); after != before || before == 0 {
		t.Fatalf("shard files: %d before prune, %d after", before, after)
	}
	r.must("repair", "--rebuild-index")
	if out := r.must("list", "home"); !strings.Contains(out, rev[:8]) {
		t.Fatalf("after the rebuild, list does not show %s:\n%s", rev, out)
	}
}

// TestWrongPassphraseWithServer: while a server runs, clients need no
// passphrase, but one they are given must be right. A wrong one used to
// be ignored, so a cron job with a broken passphrase passed until the
// server stopped.
func TestWrongPassphraseWithServer(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	os.WriteFile(filepath.Join(stage, "f"), []byte("x"), 0o644)
	pfile := filepath.Join(r.work, "second")
	os.WriteFile(pfile, []byte("second passphrase"), 0o600)
	r.must("key", "add", "--new-passphrase-file", pfile, "--label", "second")
	cases := []struct {
		name string
		env  []string
		code int
	}{
		{"wrong", []string{"STRATA_PASSPHRASE=WRONG"}, 12},
		{"another entry's", []string{"STRATA_PASSPHRASE=second passphrase"}, 0},
		{"none", []string{"STRATA_PASSPHRASE="}, 0},
	}
	for _, c := range cases {
		for _, args := range [][]string{{"list"}, {"commit", "home"}} {
			res := r.runEnv(c.env, args...)
			if res.code != c.code {
				t.Errorf("%s passphrase, %v with a server running: exit %d, want %d\n%s", c.name, args, res.code, c.code, res.stderr)
			}
			if c.code == 12 && !strings.Contains(res.stderr, "wrong passphrase") {
				t.Errorf("%s passphrase, %v: %q does not say so", c.name, args, res.stderr)
			}
		}
	}
	// A passphrase retired while the server runs is refused at once.
	third := filepath.Join(r.work, "third")
	os.WriteFile(third, []byte("third passphrase"), 0o600)
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=second passphrase"}, "key", "passwd", "--new-passphrase-file", third); res.code != 0 {
		t.Fatalf("key passwd: exit %d\n%s", res.code, res.stderr)
	}
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=second passphrase"}, "list"); res.code != 12 {
		t.Errorf("the retired passphrase with a server running: exit %d, want 12\n%s", res.code, res.stderr)
	}
	for range 2 { // the second time from what the server learned
		if res := r.runEnv([]string{"STRATA_PASSPHRASE=third passphrase"}, "list"); res.code != 0 {
			t.Errorf("the new passphrase with a server running: exit %d\n%s", res.code, res.stderr)
		}
	}
	// The server knew its own passphrase since it unlocked with it; once
	// that is retired too, it is refused as well.
	fourth := filepath.Join(r.work, "fourth")
	os.WriteFile(fourth, []byte("fourth passphrase"), 0o600)
	if res := r.run("key", "passwd", "--new-passphrase-file", fourth); res.code != 0 {
		t.Fatalf("key passwd of the server's passphrase: exit %d\n%s", res.code, res.stderr)
	}
	if res := r.run("list"); res.code != 12 {
		t.Errorf("the server's own passphrase, retired: exit %d, want 12\n%s", res.code, res.stderr)
	}
	r.runEnv([]string{"STRATA_PASSPHRASE=fourth passphrase"}, "stop")
}
