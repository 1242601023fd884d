package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
)

// TestGCDiskFullWhileRepacking: a full shard filesystem during repacking
// aborts GC cleanly; every referenced chunk still reads back, and a later
// GC, once space is back, finishes the job.
func TestGCDiskFullWhileRepacking(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	bs, faults := faultyBackends(t, dir, 3)
	s := openStore(t, dir, cfg, Options{Backends: bs})
	r := rand.New(rand.NewPCG(5, 5))
	keep := map[[32]byte][]byte{}
	var drop []chunk.ID
	for i := 0; i < 120; i++ {
		b := randBytes(r, 50_000)
		id, _, err := s.Put(ctx, chunk.KindData, b)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			drop = append(drop, id)
		} else {
			keep[id] = b
		}
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, drop); err != nil {
		t.Fatal(err)
	}
	// A third of every segment is garbage: GC must repack, and the disk
	// takes no new shard.
	faults[0].LimitSpace(0)
	if _, err := s.GC(ctx, GCOptions{MaxUnused: 0.01}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("GC on a full disk = %v, want ErrNoSpace", err)
	}
	checkAll(t, s, keep)
	faults[0].LimitSpace(-1)
	st, err := s.GC(ctx, GCOptions{MaxUnused: 0.01})
	if err != nil {
		t.Fatalf("GC after space came back: %v", err)
	}
	if st.SegmentsRepacked == 0 && st.SegmentsDeleted == 0 {
		t.Errorf("second GC did nothing: %+v", st)
	}
	checkAll(t, s, keep)
	reopenChecked(t, s, dir, cfg, keep)
}
