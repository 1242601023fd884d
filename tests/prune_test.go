package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

type pruneJSON struct {
	Plans []struct {
		Volume    string `json:"volume"`
		Decisions []struct {
			Revision struct {
				ID   string    `json:"id"`
				Time time.Time `json:"time"`
			} `json:"revision"`
			Keep    bool `json:"keep"`
			Reasons []struct {
				Text string `json:"text"`
			} `json:"reasons"`
		} `json:"decisions"`
	} `json:"plans"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freed_bytes"`
}

// commitDays backs up 60 daily states of a changing tree with --time:
// each day rewrites one 1 MiB file with new random content, so every
// revision adds about 1 MiB that only it (and later ones, until replaced)
// reference.
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
		ts := start.AddDate(0, 0, d).Format(time.RFC3339)
		ids = append(ids, strings.TrimSpace(r.must("commit", "home", "--time", ts)))
	}
	return ids
}

// TestPruneGivesSpaceBack runs retention end to end.
// Steps: commit 60 daily revisions with --time (each adds ~1 MiB); prune
// --dry-run --keep-daily 7 --keep-weekly 4 (nothing changes); protect the
// oldest; mount staging and write into it; prune for real meanwhile;
// check staging, the kept set, every kept revision's content, and shard
// bytes before and after.
// Pass: the dry run removes nothing; staging keeps the write; the kept set
// is exactly the protected one plus the 7 newest days plus the newest
// revision of each of the 4 newest ISO weeks (worked out here); every kept
// revision reads back its own day; shard bytes went down by at least 40
// removed revisions' worth (~40 MiB plus parity).
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
		ID string `json:"ID"`
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
		if !want[ids[d]] {
			continue
		}
		mnt := r.mkdir("mnt/d" + strconv.Itoa(d))
		r.must("mount", "home@"+ids[d], mnt)
		b, err := os.ReadFile(filepath.Join(mnt, "day.txt"))
		if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(d) {
			t.Errorf("revision of day %d reads day.txt = %q, %v", d, b, err)
		}
		r.must("umount", mnt)
	}
	after := r.shardBytes()
	if freed := before - after; freed < 40<<20 {
		t.Errorf("prune freed %d bytes of shards (before %d, after %d), want at least 40 MiB", freed, before, after)
	}
	t.Logf("shards before %d MiB, after %d MiB, prune reported %d bytes freed", before>>20, after>>20, res.FreedBytes)
}

// TestPruneKilledMidway kills prune with SIGKILL at several points and
// reruns it.
// Steps: commit 30 daily revisions; start prune --keep-last 5; SIGKILL it
// after a growing delay (several rounds, reopening each time); finally run
// prune to completion; scrub --read-data.
// Pass: every run after a kill opens the repository; the final kept set is
// the 5 newest; each reads back its own day; scrub finds no damage.
func TestPruneKilledMidway(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 20, 6)
	stage := r.mountNewVolume("home")
	ids := commitDays(t, r, stage, src, 30, time.Date(2026, 9, 1, 3, 0, 0, 0, time.UTC))
	r.must("umount", stage)
	r.must("stop")

	for _, delay := range []time.Duration{50, 150, 300, 600} {
		cmd := exec.Command(strataBin, "prune", "--keep-last", "5", "--max-unused", "0%")
		cmd.Env = r.env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		r.must("list", "home")
	}
	r.must("prune", "--keep-last", "5", "--max-unused", "0%")
	var revs []struct {
		ID string `json:"ID"`
	}
	json.Unmarshal([]byte(r.must("--json", "list", "home")), &revs)
	if len(revs) != 5 {
		t.Fatalf("kept %d revisions, want 5", len(revs))
	}
	for i, rv := range revs {
		if rv.ID != ids[25+i] {
			t.Errorf("kept revision %d is %s, want %s", i, rv.ID[:8], ids[25+i][:8])
		}
	}
	mnt := r.mkdir("mnt/last")
	r.must("mount", "home@latest", mnt)
	b, _ := os.ReadFile(filepath.Join(mnt, "day.txt"))
	if strings.TrimSpace(string(b)) != "29" {
		t.Errorf("latest revision reads day %q, want 29", b)
	}
	if out := itemize(t, src, mnt); out != "" {
		t.Errorf("latest revision differs from the source:\n%s", out)
	}
	r.must("umount", mnt)
	if out := r.must("scrub", "--read-data"); !strings.Contains(out, "no damage") {
		t.Errorf("scrub after killed prunes:\n%s", out)
	}
}
