package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shardBytes sums the sizes of every shard file.
func (r *repo) shardBytes() int64 {
	var n int64
	filepath.Walk(filepath.Join(r.dir, "shards"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// listIDs is the ids of vol's revisions, as 'list --json' gives them.
func (r *repo) listIDs(vol string) []string {
	r.t.Helper()
	var revs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.must("--json", "list", vol)), &revs); err != nil {
		r.t.Fatal(err)
	}
	ids := make([]string, len(revs))
	for i, rev := range revs {
		ids[i] = rev.ID
	}
	return ids
}

// dailyRevisions creates volume vol and commits n revisions dated a day
// apart from 2026-10-01, each with one file f of size random bytes
// (seed+i), new data in place of the last; it returns their ids.
func dailyRevisions(r *repo, vol string, n, size int, seed uint64) []string {
	r.t.Helper()
	stage := r.mountNewVolume(vol)
	var ids []string
	for i := 0; i < n; i++ {
		writeRandom(r.t, filepath.Join(stage, "f"), size, seed+uint64(i))
		ids = append(ids, strings.TrimSpace(r.must("commit", vol, "--time", time.Date(2026, 10, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))))
	}
	r.must("umount", stage)
	return ids
}

// statusShardBytes is the shard bytes 'status --json' reports.
func (r *repo) statusShardBytes() int64 {
	r.t.Helper()
	var st struct {
		Store struct {
			ShardBytes int64 `json:"shard_bytes"`
		} `json:"store"`
	}
	if err := json.Unmarshal([]byte(r.must("--json", "status")), &st); err != nil {
		r.t.Fatal(err)
	}
	return st.Store.ShardBytes
}

type pruneJSON struct {
	Plans []struct {
		Volume    string `json:"volume"`
		Decisions []struct {
			Revision struct {
				ID   string    `json:"id"`
				Time time.Time `json:"time"`
			} `json:"revision"`
			Keep     bool `json:"keep"`
			Deferred bool `json:"deferred"`
			Reasons  []struct {
				Text string `json:"text"`
			} `json:"reasons"`
		} `json:"decisions"`
	} `json:"plans"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freed_bytes"`
}

// commitDays backs up daily states of a changing tree with --time: each
// day rewrites one 1 MiB file with new random content, so every revision
// adds about 1 MiB that only it (and later ones, until replaced)
// reference. The day's two changing files are kept (mtimes too) under
// WORK/days/D for checkDay.
func commitDays(t *testing.T, r *repo, stage, src string, days int, start time.Time) []string {
	t.Helper()
	var ids []string
	buf := make([]byte, 1<<20)
	for d := 0; d < days; d++ {
		fillRandom(buf, uint64(d+1))
		os.WriteFile(filepath.Join(src, "daily.bin"), buf, 0o644)
		os.WriteFile(filepath.Join(src, "day.txt"), []byte(strconv.Itoa(d)+"\n"), 0o644)
		// -c: the daily files keep their size and may keep their mtime
		// second, which rsync's quick check would take for unchanged.
		sh(t, "rsync", "-ac", "--delete", src+"/", stage+"/")
		keep := r.mkdir("days/" + strconv.Itoa(d))
		sh(t, "cp", "-p", filepath.Join(src, "daily.bin"), filepath.Join(src, "day.txt"), keep)
		ts := start.AddDate(0, 0, d).Format(time.RFC3339)
		ids = append(ids, strings.TrimSpace(r.must("commit", "home", "--time", ts)))
	}
	return ids
}

// checkDay mounts revision id and compares it, content and metadata, with
// the source as it was on day d.
func checkDay(t *testing.T, r *repo, src string, d int, id string) {
	t.Helper()
	want := filepath.Join(r.work, "want")
	sh(t, "rsync", "-a", "--delete", src+"/", want+"/")
	sh(t, "cp", "-p", filepath.Join(r.work, "days", strconv.Itoa(d), "daily.bin"), filepath.Join(r.work, "days", strconv.Itoa(d), "day.txt"), want)
	mnt := r.mkdir("mnt/d" + strconv.Itoa(d))
	r.must("mount", "home@"+id, mnt)
	defer r.must("umount", mnt)
	if out := itemize(t, want, mnt); out != "" {
		t.Errorf("revision of day %d differs from its source:\n%s", d, out)
	}
}

// TestPruneGivesSpaceBack runs retention end to end.
// Steps: commit 60 daily revisions with --time (each adds ~1 MiB); prune
// --dry-run --keep-daily 7 --keep-weekly 4 (nothing changes); protect the
// oldest; mount staging and write into it; prune for real meanwhile;
// check staging, the kept set, every kept revision's content, and shard
// bytes before and after; prune again with nothing to remove.
// Pass: the dry run removes nothing; staging keeps the write; the kept set
// is exactly the protected one plus the 7 newest days plus the newest
// revision of each of the 4 newest ISO weeks (worked out here); every kept
// revision reads back byte-identical to its day's source (rsync
// --checksum); shard bytes went down by at least 40 removed revisions'
// worth (~40 MiB plus parity); the second prune removes and frees nothing.
func TestPruneGivesSpaceBack(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 50, 5)
	stage := r.mountNewVolume("home")
	// 2026-08-03 is a Monday.
	start := time.Date(2026, 8, 3, 3, 0, 0, 0, time.UTC)
	ids := commitDays(t, r, stage, src, 60, start)
	r.must("umount", stage)

	var dry pruneJSON
	json.Unmarshal([]byte(r.must("--json", "prune", "--dry-run", "--keep-daily", "7", "--keep-weekly", "4")), &dry)
	if len(dry.Plans) != 1 || len(dry.Plans[0].Decisions) != 60 {
		t.Fatalf("dry run plan: %+v", dry)
	}
	if got := strings.Count(r.must("list", "home"), "\n"); got < 61 {
		t.Fatalf("dry run removed revisions: list has %d lines", got)
	}
	// Days 53..59 (the 7 newest), plus the newest of each of the 4 newest
	// ISO weeks: weeks start on days 56, 49, 42, 35 (Mondays), so their
	// newest revisions are days 59 and 55 (both already kept), 48 and 41.
	want := map[string]bool{}
	for _, d := range []int{0, 41, 48, 53, 54, 55, 56, 57, 58, 59} { // day 0: protected below
		want[ids[d]] = true
	}
	r.must("protect", "home@"+ids[0])
	// A backup in progress: staging is mounted and written during prune.
	r.must("mount", "home", stage)
	os.WriteFile(filepath.Join(stage, "inflight.txt"), []byte("written during prune\n"), 0o644)
	before := r.shardBytes()
	var res pruneJSON
	json.Unmarshal([]byte(r.must("--json", "prune", "--keep-daily", "7", "--keep-weekly", "4", "--max-unused", "0%")), &res)
	if res.Removed != 60-len(want) {
		t.Errorf("removed %d revisions, want %d", res.Removed, 60-len(want))
	}
	if b, err := os.ReadFile(filepath.Join(stage, "inflight.txt")); err != nil || string(b) != "written during prune\n" {
		t.Errorf("staging lost a write made during prune: %q, %v", b, err)
	}
	r.must("umount", stage)
	list := r.must("--json", "list", "home")
	var revs []struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(list), &revs)
	got := map[string]bool{}
	for _, rv := range revs {
		got[rv.ID] = true
	}
	for id := range want {
		if !got[id] {
			t.Errorf("revision %s should have been kept", id[:8])
		}
	}
	if len(got) != len(want) {
		t.Errorf("kept %d revisions, want %d", len(got), len(want))
	}
	for d := range ids {
		if want[ids[d]] {
			checkDay(t, r, src, d, ids[d])
		}
	}
	after := r.shardBytes()
	if freed := before - after; freed < 40<<20 {
		t.Errorf("prune freed %d bytes of shards (before %d, after %d), want at least 40 MiB", freed, before, after)
	}
	t.Logf("shards before %d MiB, after %d MiB, prune reported %d bytes freed", before>>20, after>>20, res.FreedBytes)
	var again pruneJSON
	json.Unmarshal([]byte(r.must("--json", "prune", "--keep-daily", "7", "--keep-weekly", "4", "--max-unused", "0%")), &again)
	if again.Removed != 0 || again.FreedBytes != 0 {
		t.Errorf("second prune removed %d revisions, freed %d bytes; want nothing", again.Removed, again.FreedBytes)
	}
}

// pruneKilled runs `strata --json prune args...` and SIGKILLs it as soon
// as a progress line on stderr contains marker. It reports whether the
// marker came (else prune ran to its end).
func pruneKilled(t *testing.T, r *repo, marker string, args ...string) bool {
	t.Helper()
	cmd := exec.Command(strataBin, append([]string{"--json", "prune"}, args...)...)
	cmd.Env = r.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if !killed && strings.Contains(sc.Text(), marker) {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	return killed
}

// TestPruneKilledMidway kills prune with SIGKILL at several points and
// reruns it.
// Steps: commit 30 daily revisions; run prune --keep-last 5 and SIGKILL
// it right after its 3rd removed revision, then (rerun) after its 10th,
// then as garbage collection starts, then twice more as GC starts again;
// run prune to completion; check the revisions, scrub --read-data,
// rebuild the index from the shards (which recounts references).
// Pass: every kill hit its point and the repository opens after it; the
// first kill left between 6 and 27 revisions; the final kept set is the 5
// newest and each reads back byte-identical to its day's source; scrub
// finds no damage; the rebuild finds no chunk left unreferenced (nothing
// leaked) and shard bytes went down by at least the 25 removed MiB.
func TestPruneKilledMidway(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 20, 6)
	stage := r.mountNewVolume("home")
	ids := commitDays(t, r, stage, src, 30, time.Date(2026, 9, 1, 3, 0, 0, 0, time.UTC))
	r.must("umount", stage)
	r.must("stop")
	before := r.shardBytes()

	count := func() int { return len(r.listIDs("home")) }
	args := []string{"--keep-last", "5", "--max-unused", "0%"}
	if !pruneKilled(t, r, `"phase":"removing revisions of home","done":3,`, args...) {
		t.Fatal("prune ended before its 3rd removal")
	}
	if n := count(); n < 5 || n > 27 {
		t.Fatalf("after a kill at the 3rd removal %d revisions are left, want 5..27", n)
	}
	if !pruneKilled(t, r, `"phase":"removing revisions of home","done":10,`, args...) {
		t.Fatal("second prune ended before its 10th removal")
	}
	count()
	for i := 0; i < 3; i++ {
		if !pruneKilled(t, r, `"phase":"collecting garbage"`, args...) {
			t.Fatalf("prune %d ended before collecting garbage", i+3)
		}
		count()
	}
	r.must("prune", "--keep-last", "5", "--max-unused", "0%")
	revs := r.listIDs("home")
	if len(revs) != 5 {
		t.Fatalf("kept %d revisions, want 5", len(revs))
	}
	for i, id := range revs {
		if id != ids[25+i] {
			t.Errorf("kept revision %d is %s, want %s", i, id[:8], ids[25+i][:8])
		}
	}
	for d := 25; d < 30; d++ {
		checkDay(t, r, src, d, ids[d])
	}
	if out := r.must("scrub", "--read-data"); !strings.Contains(out, "no damage") {
		t.Errorf("scrub after killed prunes:\n%s", out)
	}
	after := r.shardBytes()
	if before-after < 25<<20 {
		t.Errorf("shards before %d, after %d bytes: freed less than the 25 MiB the removed revisions held alone", before, after)
	}
	var rep struct {
		Unreferenced int `json:"unreferenced"`
		Missing      int `json:"missing"`
	}
	json.Unmarshal([]byte(r.must("--json", "repair", "--rebuild-index")), &rep)
	if rep.Unreferenced != 0 || rep.Missing != 0 {
		t.Errorf("after killed prunes and a full one, a recount finds %d chunks unreferenced (leaked) and %d missing; want none", rep.Unreferenced, rep.Missing)
	}
}

// TestPruneBadInput: bad prune input gets a clear error and removes
// nothing.
// Steps: a volume with three revisions and an empty volume; run prune
// (not --dry-run) with each bad input; then a dry run over all volumes.
// Pass: each bad input exits non-zero with a message naming the cause;
// the dry run says the empty volume has no revisions and plans the other;
// all three revisions are still listed.
func TestPruneBadInput(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	for i := 0; i < 3; i++ {
		os.WriteFile(filepath.Join(stage, "a"), []byte(strconv.Itoa(i)), 0o644)
		r.must("commit", "home", "--time", time.Date(2026, 11, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
	}
	r.must("umount", stage)
	r.must("volume", "create", "empty")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--keep-dayly", "7"}, "unknown flag --keep-dayly"},
		{"bad duration", []string{"--keep-within", "7x"}, `unknown unit x in duration "7x"`},
		{"bad count", []string{"--keep-daily", "seven"}, `--keep-daily: invalid count "seven"`},
		{"negative count", []string{"--keep-daily=-5"}, `--keep-daily: invalid count "-5"`},
		{"bad size", []string{"--max-size", "10Q"}, "--max-size"},
		{"hanoi period without hanoi", []string{"--keep-last", "1", "--hanoi-every", "2d"}, "need --hanoi"},
		{"space order without a goal", []string{"--space-order", "age"}, "space rule without a goal"},
		{"space guard below 1", []string{"--max-size", "1G", "--space-guard", "0.5"}, "--space-guard"},
		{"unknown schedule", []string{"--schedule", "nosuch"}, `unknown schedule "nosuch"`},
		{"bad schedule spec", []string{"--schedule", "daily=1x:7"}, "1x"},
		{"unknown time zone", []string{"--keep-daily", "1", "--tz", "Mars/Olympus"}, "unknown time zone"},
		{"bad max-unused", []string{"--keep-daily", "1", "--max-unused", "150%"}, "--max-unused"},
		{"empty policy for a volume", []string{"home"}, "empty retention policy"},
		{"policy removing everything", []string{"--keep-tag", "nosuch"}, "would remove every revision of home; nothing was removed"},
		{"unknown volume", []string{"--keep-last", "1", "nosuch"}, "no volume named"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := r.run(append([]string{"prune"}, c.args...)...)
			if res.code == 0 {
				t.Fatalf("strata prune %s succeeded; want an error mentioning %q", strings.Join(c.args, " "), c.want)
			}
			if !strings.Contains(res.stderr, c.want) {
				t.Errorf("strata prune %s: stderr does not mention %q:\n%s", strings.Join(c.args, " "), c.want, tail(res.stderr, 600))
			}
		})
	}
	// A parse error is a usage error: exit code 2 and the one-line usage,
	// not the whole help of prune.
	res := r.run("prune", "--keep-dayly", "7")
	if res.code != 2 {
		t.Errorf("unknown flag: exit code %d, want 2 (usage)", res.code)
	}
	if n := strings.Count(res.stdout+res.stderr, "\n"); n > 6 {
		t.Errorf("unknown flag: %d lines of output, want the short usage:\n%s", n, res.stdout+res.stderr)
	}
	// No policy at all: nothing removed, garbage collected (the hints of
	// volume rm and a full disk send users to a bare 'strata prune').
	if out := r.must("prune"); !strings.Contains(out, "no retention policy given: no revision removed") {
		t.Errorf("bare prune:\n%s", out)
	}
	out := r.must("prune", "--keep-last", "1", "--dry-run")
	if !strings.Contains(out, "volume empty:\n  no revisions") || !strings.Contains(out, "volume home:") {
		t.Errorf("dry run over a volume without revisions:\n%s", out)
	}
	if n := len(r.listIDs("home")); n != 3 {
		t.Errorf("after the bad inputs home has %d revisions, want 3", n)
	}
}

// TestPruneMountedAndProtected: safety rails through the binary.
// Steps: four daily revisions; mount the oldest read-only; protect the
// second, then unprotect the third after protecting it; prune
// --keep-last 1 (with TZ=:/etc/localtime in the environment); unmount;
// prune again.
// Pass: the first prune defers the mounted revision (reason "mounted"),
// keeps the protected one and the newest, removes the unprotected one;
// the second prune removes the formerly mounted revision.
func TestPruneMountedAndProtected(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	var ids []string
	for i := 0; i < 4; i++ {
		os.WriteFile(filepath.Join(stage, "a"), []byte(strconv.Itoa(i)), 0o644)
		ids = append(ids, strings.TrimSpace(r.must("commit", "home", "--time", time.Date(2026, 11, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))))
	}
	r.must("umount", stage)
	mnt := r.mkdir("mnt/old")
	r.must("mount", "home@"+ids[0], mnt)
	r.must("protect", "home@"+ids[1])
	r.must("protect", "home@"+ids[2])
	r.must("unprotect", "home@"+ids[2])
	var res pruneJSON
	out := r.runEnv([]string{"TZ=:/etc/localtime"}, "--json", "prune", "--keep-last", "1")
	if out.code != 0 {
		t.Fatalf("prune with TZ=:/etc/localtime: %s", out.stderr)
	}
	json.Unmarshal([]byte(out.stdout), &res)
	if len(res.Plans) != 1 || len(res.Plans[0].Decisions) != 4 {
		t.Fatalf("plan: %s", out.stdout)
	}
	type verdict struct {
		keep, deferred bool
		reason         string
	}
	want := map[string]verdict{ids[0]: {true, true, "mounted or served: removal deferred"}, ids[1]: {true, false, "protected"},
		ids[2]: {false, false, "no rule keeps it"}, ids[3]: {true, false, "newest"}}
	for _, d := range res.Plans[0].Decisions {
		w := want[d.Revision.ID]
		var reasons []string
		for _, rs := range d.Reasons {
			reasons = append(reasons, rs.Text)
		}
		if d.Keep != w.keep || d.Deferred != w.deferred || !slices.Contains(reasons, w.reason) {
			t.Errorf("revision %s: keep %v deferred %v reasons %q; want keep %v deferred %v with %q",
				d.Revision.ID[:8], d.Keep, d.Deferred, reasons, w.keep, w.deferred, w.reason)
		}
	}
	if res.Removed != 1 {
		t.Errorf("removed %d revisions, want 1", res.Removed)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "a")); err != nil || string(b) != "0" {
		t.Errorf("mounted revision reads %q, %v after prune", b, err)
	}
	r.must("umount", mnt)
	json.Unmarshal([]byte(r.must("--json", "prune", "--keep-last", "1")), &res)
	if res.Removed != 1 {
		t.Errorf("prune after unmounting removed %d revisions, want the formerly mounted one", res.Removed)
	}
	if revs := r.listIDs("home"); len(revs) != 2 || revs[0] != ids[1] || revs[1] != ids[3] {
		t.Errorf("revisions left: %v, want the protected and the newest", revs)
	}
}

// TestPruneSpaceGoalAcrossVolumes: a space goal is the repository's. Two
// volumes of four revisions; b's are a month older than a's.
// Pass: a goal one revision below the size removes one revision in all,
// not one per volume (each volume used to be planned for the whole
// shortfall); with --space-order age it is b's oldest, though a comes
// first, and with the volumes named in either order (QA: the goal was
// charged to the first volume only); both plans carry the repository's
// need.
func TestPruneSpaceGoalAcrossVolumes(t *testing.T) {
	r := newRepo(t)
	for v, vol := range []string{"a", "b"} {
		stage := r.mountNewVolume(vol)
		for i := 0; i < 4; i++ {
			data := make([]byte, 2<<20)
			rand.New(rand.NewSource(int64(i*10 + len(vol) + int(vol[0])))).Read(data) // incompressible
			os.WriteFile(filepath.Join(stage, "f"+strconv.Itoa(i)), data, 0o644)
			r.must("commit", vol, "--time", time.Date(2026, 10-time.Month(v), 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
		}
		r.must("umount", stage)
	}
	type plan struct {
		Volume    string
		Decisions []struct {
			Keep     bool
			Revision struct{ Time time.Time }
		}
		Space *struct{ Need, Freed int64 }
	}
	dry := func(args ...string) []plan {
		t.Helper()
		var res struct{ Plans []plan }
		out := r.must(append([]string{"--json", "prune", "--dry-run", "--space-guard=-1"}, args...)...)
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Plans) != 2 {
			t.Fatalf("prune --json: %v: %s", err, out)
		}
		return res.Plans
	}
	size := dry("--max-size", "1")[0].Space.Need + 1
	goal := strconv.FormatInt(size-(512<<10), 10)
	for _, args := range [][]string{
		{"--max-size", goal, "--space-order", "age"},
		{"--max-size", goal, "--space-order", "age", "b", "a"},
	} {
		plans := dry(args...)
		var removed []string
		for _, p := range plans {
			for _, d := range p.Decisions {
				if !d.Keep {
					removed = append(removed, p.Volume+" "+d.Revision.Time.Format("2006-01-02"))
				}
			}
		}
		if len(removed) != 1 || removed[0] != "b 2026-09-01" {
			t.Errorf("prune %v with the repository at %d bytes: removed %v; want only b's oldest, b 2026-09-01", args, size, removed)
		}
		if plans[0].Space.Need != plans[1].Space.Need || plans[0].Space.Freed+plans[1].Space.Freed < plans[0].Space.Need {
			t.Errorf("prune %v: plans %+v and %+v; want both with the repository's need, and their frees together meeting it", args, *plans[0].Space, *plans[1].Space)
		}
	}
}

// TestPruneMaxSizeOnDisk: --max-size is the repository's size on disk,
// parity included, as du counts it. It compared data bytes, and QA's
// repository stayed at 179 MiB after 'prune --max-size 100M'.
func TestPruneMaxSizeOnDisk(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("w")
	for i := 0; i < 6; i++ {
		data := make([]byte, 2<<20)
		rand.New(rand.NewSource(int64(i + 70))).Read(data) // incompressible, unique to its revision
		os.WriteFile(filepath.Join(stage, "f"), data, 0o644)
		r.must("commit", "w", "--time", time.Date(2026, 10, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
	}
	r.must("umount", stage)
	goal := r.statusShardBytes() * 6 / 10
	r.must("prune", "--max-size", strconv.FormatInt(goal, 10), "--space-guard=-1")
	if got := r.statusShardBytes(); got > goal || got == 0 {
		t.Errorf("after prune --max-size %d the shard files hold %d bytes", goal, got)
	}
}

// TestPruneMaxSizeSharedData: a space goal whose estimates count data
// later revisions still hold. Each revision adds a file and keeps the
// earlier ones, so the newest holds everything and no removal frees a
// byte; the goal cannot be met.
// Pass: the real run measures after its first round, sees that the
// removals freed almost nothing of their estimate, and stops there, with
// a warning and exit 1, instead of removing every revision the rules
// allow for nothing (QA, with two volumes holding the same data, saw all
// ten revisions of both go for a 12 MiB goal).
func TestPruneMaxSizeSharedData(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("w")
	for i := 0; i < 5; i++ {
		data := make([]byte, 2<<20)
		rand.New(rand.NewSource(int64(i + 170))).Read(data)
		os.WriteFile(filepath.Join(stage, "f"+strconv.Itoa(i)), data, 0o644)
		r.must("commit", "w", "--time", time.Date(2026, 10, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
	}
	r.must("umount", stage)
	goal := strconv.FormatInt(r.statusShardBytes()*6/10, 10)
	res := r.run("--json", "prune", "--max-size", goal, "--space-guard=-1")
	var out struct {
		Plans []struct {
			Round int `json:"round"`
		} `json:"plans"`
		Removed  int      `json:"removed"`
		Warnings []string `json:"warnings"`
		Met      bool     `json:"space_goal_met"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("prune --json: %v\n%s%s", err, res.stdout, res.stderr)
	}
	rounds := 0
	for _, pl := range out.Plans {
		rounds = max(rounds, pl.Round)
	}
	warn := strings.Join(out.Warnings, "\n")
	if res.code != 1 || out.Met || !strings.Contains(warn, "still held by the revisions left") || !strings.Contains(warn, "not met") {
		t.Errorf("prune with a goal no removal can meet: exit %d, space_goal_met %v, warnings %q; want exit 1 and a warning that the removals freed nothing", res.code, out.Met, out.Warnings)
	}
	if out.Removed == 0 || out.Removed >= 4 || rounds != 1 {
		t.Errorf("removed %d revisions in %d rounds; want the first round's removals only", out.Removed, rounds)
	}
	if n := len(r.listIDs("w")); n != 5-out.Removed {
		t.Errorf("%d revisions left after removing %d of 5", n, out.Removed)
	}
}

// TestPruneSpaceGoalAcrossVolumesSafe: what a space goal must not remove
// when there are several volumes. Two volumes of three daily revisions,
// each revision 3 MiB of new data in place of the last.
//   - garbage: the other volume is removed with volume rm --force, which
//     leaves its data as garbage; a goal that collecting it meets removes
//     no revision of the first;
//   - the guard: the other volume's newest revision grows suddenly; the
//     guard holds the goal back for both volumes, not only for that one.
func TestPruneSpaceGoalAcrossVolumesSafe(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(r *repo) int64 // returns the --max-size goal
		vols    []string            // volumes named (none: all)
		code    int
		warning string
	}{
		{"garbage of a removed volume", func(r *repo) int64 {
			before := r.shardBytes()
			r.must("volume", "rm", "beta", "--force")
			return before * 6 / 10
		}, nil, 0, ""},
		{"guard in another volume", growBeta, nil, 1, "space guard held removals back"},
		// Named twice, too: it was planned twice and the second removal of
		// each revision failed.
		{"guard in a volume not named", growBeta, []string{"alpha", "alpha"}, 1, "space guard held removals back"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRepo(t)
			for v, vol := range []string{"alpha", "beta"} {
				dailyRevisions(r, vol, 3, 3<<20, uint64(300+10*v))
			}
			goal := tc.prepare(r)
			res := r.run(append([]string{"--json", "prune", "--max-size", strconv.FormatInt(goal, 10)}, tc.vols...)...)
			var out struct {
				Plans []struct {
					Volume string `json:"volume"`
				} `json:"plans"`
				Removed  int      `json:"removed"`
				Warnings []string `json:"warnings"`
			}
			if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
				t.Fatalf("prune --json: %v\n%s%s", err, res.stdout, res.stderr)
			}
			if res.code != tc.code || out.Removed != 0 || !strings.Contains(strings.Join(out.Warnings, "\n"), tc.warning) {
				t.Errorf("prune --max-size %d %v: exit %d, removed %d, warnings %q; want exit %d, nothing removed, a warning with %q",
					goal, tc.vols, res.code, out.Removed, out.Warnings, tc.code, tc.warning)
			}
			planned := map[string]int{}
			for _, pl := range out.Plans {
				if planned[pl.Volume]++; planned[pl.Volume] > 1 {
					t.Errorf("prune %v planned %s twice", tc.vols, pl.Volume)
				}
			}
			if n := len(r.listIDs("alpha")); n != 3 {
				t.Errorf("alpha has %d revisions after the prune; want all 3", n)
			}
		})
	}
}

// growBeta commits a sudden 18 MiB into volume beta, past the space
// guard, and returns a --max-size goal that only removing history meets.
func growBeta(r *repo) int64 {
	stage := r.mkdir("mnt/b2")
	r.must("mount", "beta", stage)
	for i := 0; i < 6; i++ {
		writeRandom(r.t, filepath.Join(stage, "big"+strconv.Itoa(i)), 3<<20, uint64(400+i))
	}
	r.must("commit", "beta", "--time", time.Date(2026, 10, 4, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
	r.must("umount", stage)
	return r.shardBytes() * 8 / 10
}

// TestPruneSpaceGoalRepacksFirst: garbage a round's collection leaves
// under --max-unused still takes the disk. Revision 1 holds a and b, every
// later one drops b and adds a file, so only b is ever freed, and it shares
// a segment with a, which stays. The goal needs half of b's space back.
// Pass: the second round repacks before removing more, meets the goal and
// removes nothing else (without the repack, every revision but the newest
// goes, since none frees a byte, and the goal is still not met).
func TestPruneSpaceGoalRepacksFirst(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("w")
	write := func(name string, seed int64) {
		data := make([]byte, 3<<20)
		rand.New(rand.NewSource(seed)).Read(data)
		if err := os.WriteFile(filepath.Join(stage, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", 270)
	write("b", 271)
	for i := 0; i < 5; i++ {
		if i > 0 {
			os.Remove(filepath.Join(stage, "b"))
			write("f"+strconv.Itoa(i), int64(271+i))
		}
		r.must("commit", "w", "--time", time.Date(2026, 10, 1+i, 3, 0, 0, 0, time.UTC).Format(time.RFC3339))
	}
	r.must("umount", stage)
	// Six 3 MiB files in all; b is a sixth of the shard bytes.
	before := r.shardBytes()
	goal := before - before/12
	res := r.run("--json", "prune", "--max-size", strconv.FormatInt(goal, 10), "--space-guard=-1", "--max-unused", "90%")
	var out struct {
		Removed int  `json:"removed"`
		Met     bool `json:"space_goal_met"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("prune --json: %v\n%s%s", err, res.stdout, res.stderr)
	}
	if res.code != 0 || !out.Met || out.Removed != 1 {
		t.Errorf("prune --max-size %d (of %d) --max-unused 90%%: exit %d, space_goal_met %v, removed %d; want the goal met by removing revision 1 and repacking\n%s", goal, before, res.code, out.Met, out.Removed, res.stderr)
	}
	if got := r.shardBytes(); got > goal {
		t.Errorf("after the prune the shard files hold %d bytes, over the goal of %d\n%s", got, goal, res.stdout)
	}
}

// TestPruneDefersBrowsedRevision: a revision read through a mount --all
// counts as mounted, so prune defers its removal (QA: the revision went,
// and the reader copying out of it got EIO). Steps: three revisions;
// mount --all; list the volume directory (ls -l, which looks at every
// revision's root) and read one file of the oldest; prune --keep-last 1.
// Pass: the oldest is deferred and still reads whole; the middle one,
// only listed, is removed.
func TestPruneDefersBrowsedRevision(t *testing.T) {
	r := newRepo(t)
	ids := dailyRevisions(r, "home", 3, 2<<20, 500)
	want := make([]byte, 2<<20)
	fillRandom(want, 500)
	all := r.mkdir("mnt/all")
	r.must("mount", "--all", all)
	t.Cleanup(func() { r.run("umount", all) })
	dirOf := func(id string) string {
		ents, err := os.ReadDir(filepath.Join(all, "home"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), "_"+id[:8]) {
				return filepath.Join(all, "home", e.Name())
			}
		}
		t.Fatalf("no directory of revision %s in %s", id[:8], filepath.Join(all, "home"))
		return ""
	}
	sh(t, "ls", "-l", filepath.Join(all, "home"))
	oldest := filepath.Join(dirOf(ids[0]), "f")
	if got, err := os.ReadFile(oldest); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %s before the prune: %v", oldest, err)
	}
	r.must("prune", "--keep-last", "1", "--max-unused", "0%")
	left := r.listIDs("home")
	if len(left) != 2 || left[0] != ids[0] || left[1] != ids[2] {
		t.Errorf("revisions left: %v; want the browsed oldest %s (deferred) and the newest %s", left, ids[0][:8], ids[2][:8])
	}
	if got, err := os.ReadFile(oldest); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read %s after the prune: %v; want its content whole", oldest, err)
	}
}

// TestPruneMinFree: --min-free counts what new backups may take, on disk
// as the estimates do. Steps: a repository on a 400 MiB tmpfs, eight
// daily revisions of 8 MiB each replacing the last; prune --min-free with
// a goal 30 MiB over what status reports as room now (avail, scaled from
// data to disk bytes).
// Pass: afterwards the room is at least the goal, and only the few oldest
// revisions went (QA: free space after parity was compared with on-disk
// estimates, and a run removed 11 of 16 revisions where 3 would do).
func TestPruneMinFree(t *testing.T) {
	work := t.TempDir()
	fsDir := tmpfs(t, work, "400m")
	r := newRepoAt(t, work, filepath.Join(fsDir, "repo"))
	dailyRevisions(r, "home", 8, 8<<20, 600)
	room := func() int64 {
		var st struct {
			Store struct {
				ShardBytes   int64 `json:"shard_bytes"`
				SegmentBytes int64 `json:"segment_bytes"`
				Avail        int64 `json:"avail"`
			} `json:"store"`
		}
		if err := json.Unmarshal([]byte(r.must("--json", "status")), &st); err != nil {
			t.Fatal(err)
		}
		return int64(float64(st.Store.Avail) * float64(st.Store.ShardBytes) / float64(st.Store.SegmentBytes))
	}
	goal := room() + 30<<20
	res := r.run("--json", "prune", "--min-free", strconv.FormatInt(goal, 10))
	var out struct {
		Removed int  `json:"removed"`
		Met     bool `json:"space_goal_met"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("prune --json: %v\n%s%s", err, res.stdout, res.stderr)
	}
	// 30 MiB of the 12 MiB each revision takes on disk: 3, a 4th for
	// rounding and metadata at most.
	if res.code != 0 || !out.Met || out.Removed < 3 || out.Removed > 4 {
		t.Errorf("prune --min-free %d: exit %d, space_goal_met %v, removed %d; want the goal met by removing 3 or 4 revisions\n%s", goal, res.code, out.Met, out.Removed, res.stderr)
	}
	if got := room(); got < goal {
		t.Errorf("room after the prune: %d; want at least the goal %d", got, goal)
	}
}

// TestPruneSpaceGoalDefersMounted: a revision the space goal would remove
// that is mounted is deferred, not replaced by a more important one (QA:
// the next one in order went instead, for good). Steps: four daily
// revisions of new data; mount the oldest; prune --max-size needing one
// revision, oldest first; unmount; prune again.
// Pass: the first prune removes nothing, says the goal is not met and
// exits 1; the second removes the oldest only.
func TestPruneSpaceGoalDefersMounted(t *testing.T) {
	r := newRepo(t)
	ids := dailyRevisions(r, "home", 4, 3<<20, 700)
	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@"+ids[0], rev)
	goal := strconv.FormatInt(r.statusShardBytes()-(1<<20), 10)
	args := []string{"--json", "prune", "--max-size", goal, "--space-order", "age", "--space-guard=-1"}
	res := r.run(args...)
	if left := r.listIDs("home"); res.code != 1 || len(left) != 4 || !strings.Contains(res.stdout, "removal deferred") {
		t.Errorf("prune with the oldest mounted: exit %d, %d revisions left; want exit 1, all 4 left and the oldest's removal deferred\n%s%s", res.code, len(left), res.stdout, res.stderr)
	}
	r.must("umount", rev)
	res = r.run(args...)
	if left := r.listIDs("home"); res.code != 0 || len(left) != 3 || slices.Contains(left, ids[0]) {
		t.Errorf("prune after the unmount: exit %d, revisions left %v; want the oldest %s gone, the rest kept\n%s", res.code, left, ids[0][:8], res.stderr)
	}
}
