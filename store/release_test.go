package store

import (
	"context"
	"maps"
	"testing"
)

// TestReleaseBuffers: after a backup's writes the store holds spare
// segment and parity buffers; ReleaseBuffers lets them all go, and later
// writes and reads work as before.
func TestReleaseBuffers(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 1, 40, 256<<10) // ~5 MiB: several 1 MiB segments
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.segBufs) == 0 || len(s.shardBufs) == 0 {
		t.Fatalf("no spare buffers after sealing segments (%d segment, %d parity); the test no longer sets up its case", len(s.segBufs), len(s.shardBufs))
	}
	s.ReleaseBuffers()
	if n, m := len(s.segBufs), len(s.shardBufs); n != 0 || m != 0 {
		t.Errorf("after ReleaseBuffers: %d segment and %d parity buffers kept, want none", n, m)
	}
	maps.Copy(want, putRandom(t, s, 2, 40, 256<<10))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want)
}
