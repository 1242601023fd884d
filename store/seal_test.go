package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// removeShardDirs deletes whole shard dirs, as a dead disk would leave them.
func removeShardDirs(t *testing.T, dir string, idx ...int) {
	t.Helper()
	for _, i := range idx {
		if err := os.RemoveAll(filepath.Join(dir, "shards", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSealProtectsWithoutJournal checks that after Seal nothing depends on
// the journal: losing it and M shard dirs loses nothing.
func TestSealProtectsWithoutJournal(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	// Less than a segment, so without Seal it would only be journaled.
	want := putRandom(t, s, 7, 20, 20_000)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	more := putRandom(t, s, 8, 10, 20_000)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.OpenChunks != 0 || st.Segments == 0 {
		t.Fatalf("after Seal: %d open chunks, %d segments", st.OpenChunks, st.Segments)
	}
	if err := s.Seal(ctx); err != nil { // nothing new: no empty segment
		t.Fatal(err)
	}
	if st2, _ := s.Stats(ctx); st2.Segments != st.Segments {
		t.Fatalf("Seal with nothing open made a segment: %d → %d", st.Segments, st2.Segments)
	}
	// Simulate a crash right after Seal: no Close, so nothing else is
	// written; the lock goes with the process, here with unlockRepo.
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.workWG.Wait()
	close(s.sealQ)
	s.sealWG.Wait()
	s.db.Close()
	unlockRepo(s.lockFile)
	if err := os.RemoveAll(filepath.Join(dir, "journal")); err != nil {
		t.Fatal(err)
	}
	removeShardDirs(t, dir, 0, 3)
	s2 := openStore(t, dir, cfg, Options{})
	checkAll(t, s2, want)
	checkAll(t, s2, more)
}

// TestSealConcurrentWithPuts seals while other goroutines put and read
// (run with -race); after the last one nothing is left open or damaged.
func TestSealConcurrentWithPuts(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	var wg sync.WaitGroup
	results := make([]map[[32]byte][]byte, 3)
	for w := range results {
		wg.Go(func() {
			results[w] = putRandom(t, s, uint64(100+w), 60, 60_000)
			for id, b := range results[w] {
				got, err := s.Get(ctx, id)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("Get during seals: %v", err)
					return
				}
			}
		})
	}
	for range 5 {
		if err := s.Seal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Stats(ctx); st.OpenChunks != 0 {
		t.Fatalf("%d chunks still open after the last Seal", st.OpenChunks)
	}
	for _, r := range results {
		checkAll(t, s, r)
	}
	rep, err := s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || len(rep.Damaged) != 0 || len(rep.Orphans) != 0 {
		t.Fatalf("scrub: %+v, %v", rep, err)
	}
}

// TestOrphanIDsNotReused: shard files a crash left before their segment
// was indexed keep their id from being given to a new segment.
func TestOrphanIDsNotReused(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	putRandom(t, s, 41, 5, 10_000)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	const orphan = "0000000000000100"
	if err := os.WriteFile(filepath.Join(dir, "shards", "2", orphan), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 42, 5, 10_000)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "shards", "2", orphan)); err != nil || string(got) != "stale" {
		t.Fatalf("orphan shard file overwritten or gone: %q, %v", got, err)
	}
	names := shardNames(t, dir, 0)
	if last := names[len(names)-1]; last <= orphan {
		t.Fatalf("new segment %s does not come after orphan %s", last, orphan)
	}
	checkAll(t, s, want)
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil || !slices.Equal(rep.Orphans, []uint64{0x100}) {
		t.Fatalf("scrub orphans = %v, %v; want [0x100]", rep.Orphans, err)
	}
}
