package store

import (
	"context"
	"maps"
	"testing"
)

// TestReleaseBuffers: after a backup's writes the store holds the
// sealers' spare buffers; ReleaseBuffers lets them all go, and later
// writes and reads work as before.
func TestReleaseBuffers(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 1, 40, 256<<10) // ~5 MiB: several 1 MiB segments
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.sealBufs) == 0 {
		t.Fatal("no spare buffers after sealing segments; the test no longer sets up its case")
	}
	s.ReleaseBuffers()
	if n := len(s.sealBufs); n != 0 {
		t.Errorf("after ReleaseBuffers: %d sets of buffers kept, want none", n)
	}
	maps.Copy(want, putRandom(t, s, 2, 40, 256<<10))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want)
}
