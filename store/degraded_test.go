package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/shard"
	"github.com/strata-backup/strata/store/shard/shardtest"
)

// shardNames lists the segment files in shard dir i.
func shardNames(t *testing.T, dir string, i int) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "shards", strconv.Itoa(i)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestDegradedShardDirs(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 11, 60, 60_000) // a few 1 MiB segments
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := shardNames(t, dir, 0)
	removeShardDirs(t, dir, 1, 4)

	s = openStore(t, dir, cfg, Options{})
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.MissingShardDirs, []int{1, 4}) {
		t.Fatalf("Stats.MissingShardDirs = %v, want [1 4]", st.MissingShardDirs)
	}
	checkAll(t, s, want)

	// New data is written to the four dirs left.
	more := putRandom(t, s, 12, 30, 60_000)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, more)
	for _, i := range []int{1, 4} {
		if _, err := os.Stat(filepath.Join(dir, "shards", strconv.Itoa(i))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("shard dir %d recreated before repair: %v", i, err)
		}
	}

	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Damaged) != int(rep.Segments) || !slices.Equal(rep.MissingShardDirs, []int{1, 4}) {
		t.Fatalf("scrub with two dirs missing: ok=%v, %d of %d segments damaged, missing dirs %v",
			rep.OK(), len(rep.Damaged), rep.Segments, rep.MissingShardDirs)
	}
	for _, d := range rep.Damaged {
		if !slices.Equal(d.Missing, []int{1, 4}) || d.Lost {
			t.Fatalf("segment %016x damage: %+v", d.Segment, d)
		}
	}

	rep, err = s.Scrub(ctx, ScrubOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.MissingShardDirs) != 0 {
		t.Fatalf("repair: %+v", rep)
	}
	after := shardNames(t, dir, 0)
	if len(after) <= len(before) {
		t.Fatalf("shard dir 0: %d files before, %d after new seals", len(before), len(after))
	}
	for _, i := range []int{1, 4} {
		if got := shardNames(t, dir, i); !slices.Equal(got, after) {
			t.Fatalf("repaired shard dir %d holds %v, want %v", i, got, after)
		}
	}
	rep, err = s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || len(rep.Damaged) != 0 || !rep.OK() {
		t.Fatalf("scrub after repair: %+v, %v", rep, err)
	}
	if st, _ := s.Stats(ctx); len(st.MissingShardDirs) != 0 {
		t.Fatalf("Stats.MissingShardDirs after repair = %v", st.MissingShardDirs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Without the dirs that were rebuilt, everything still reads: the
	// repair restored full redundancy.
	removeShardDirs(t, dir, 0, 5)
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	checkAll(t, s, more)
}

func TestTooManyShardDirsMissing(t *testing.T) {
	dir, cfg := testRepo(t, 4, 2)
	removeShardDirs(t, dir, 0, 2, 5)
	_, err := Open(context.Background(), dir, cfg, crypt.NewKeys(testMaster), Options{})
	var se *ShardDirError
	if !errors.As(err, &se) || se.Index != 0 || !strings.Contains(err.Error(), "scrub --repair") {
		t.Fatalf("Open with three of 4+2 shard dirs missing = %v", err)
	}
}

// TestRepairDoesNotCreateParents checks that repair never builds a path
// on a disk that is not mounted: only the last element is recreated.
func TestRepairDoesNotCreateParents(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	mnt := filepath.Join(t.TempDir(), "disk")
	if err := os.MkdirAll(filepath.Join(mnt, "strata"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.ShardDirs = []string{"shards/0", "shards/1", filepath.Join(mnt, "strata")}
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 3, 10, 50_000)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.RemoveAll(mnt); err != nil { // the disk is gone
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	rep, err := s.Scrub(ctx, ScrubOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !slices.Equal(rep.MissingShardDirs, []int{2}) {
		t.Fatalf("repair with the disk gone: %+v", rep)
	}
	if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("repair created %s: %v", mnt, err)
	}
}

// TestUnwritableShardDir: a shard dir that refuses writes (read-only
// filesystem) lets segments through with K+1 shards, which scrub reports
// and repair completes once the dir works again; with two refusing, a
// 4+2 store cannot keep a parity and sealing fails clearly.
func TestUnwritableShardDir(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	bs, faults := faultyBackends(t, dir, 6)
	s := openStore(t, dir, cfg, Options{Backends: bs})
	faults[3].FailPuts(syscall.EROFS)
	want := putRandom(t, s, 5, 30, 60_000)
	if err := s.Seal(ctx); err != nil {
		t.Fatalf("seal with one read-only shard dir: %v", err)
	}
	checkAll(t, s, want)
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil || len(rep.Damaged) == 0 || len(rep.Damaged) != int(rep.Segments) {
		t.Fatalf("scrub after writes without shard 3: %+v, %v", rep, err)
	}
	faults[2].FailPuts(syscall.EROFS)
	more := putRandom(t, s, 6, 5, 60_000)
	err = s.Seal(ctx)
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "only 4 of 6 shards written, need 5") {
		t.Fatalf("seal with two read-only shard dirs = %v", err)
	}
	checkAll(t, s, more) // kept in memory for a retry
	faults[2].FailPuts(nil)
	faults[3].FailPuts(nil)
	if err := s.Seal(ctx); err != nil {
		t.Fatalf("seal once the dirs work again: %v", err)
	}
	if rep, err = s.Scrub(ctx, ScrubOptions{Repair: true}); err != nil || !rep.OK() {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	if rep, err = s.Scrub(ctx, ScrubOptions{ReadData: 100}); err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("scrub after repair: %+v, %v", rep, err)
	}
	checkAll(t, s, want)
	checkAll(t, s, more)
}

// TestReadOnlyMountShardDir uses a real read-only bind mount (root only):
// Open runs degraded and names the dir.
func TestReadOnlyMountShardDir(t *testing.T) {
	if os.Getuid() != 0 {
		t.Log("not root: read-only shard dirs covered by TestUnwritableShardDir only")
		return
	}
	dir, cfg := testRepo(t, 2, 1)
	p := filepath.Join(dir, "shards", "1")
	if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(p, syscall.MNT_DETACH) })
	if err := syscall.Mount("", p, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	logs := &syncBuf{}
	s := openStore(t, dir, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if got := s.MissingShardDirs(); !slices.Equal(got, []int{1}) {
		t.Fatalf("MissingShardDirs = %v, want [1]", got)
	}
	if !strings.Contains(logs.String(), p) || !strings.Contains(logs.String(), "read-only") {
		t.Fatalf("warning does not name the read-only dir: %s", logs.String())
	}
	want := putRandom(t, s, 9, 10, 50_000)
	if err := s.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want)
	s.Close()
	// Two unusable dirs of 2+1: Open refuses and says why.
	syscall.Unmount(p, syscall.MNT_DETACH)
	removeShardDirs(t, dir, 0)
	if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("", p, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), dir, cfg, crypt.NewKeys(testMaster), Options{})
	var se *ShardDirError
	if !errors.As(err, &se) {
		t.Fatalf("Open with 2 of 2+1 dirs unusable = %v", err)
	}
}

var _ shard.Backend = (*shardtest.Faulty)(nil)

// syncBuf collects log output from any goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
