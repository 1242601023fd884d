package store

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
)

// TestDamageNamesWhatIsAffected: with Options.Describe, a chunk lost to
// damage is named in Get's DamageError and in Scrub's report.
func TestDamageNamesWhatIsAffected(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	var mu sync.Mutex
	names := map[chunk.ID]string{}
	describe := func(id chunk.ID) string {
		mu.Lock()
		defer mu.Unlock()
		return names[id]
	}
	s := openStore(t, dir, cfg, Options{Describe: describe})
	want := putRandom(t, s, 31, 12, 40_000)
	mu.Lock()
	for id := range want {
		names[id] = "vm@1 disk.img block " + chunk.ID(id).Short()
	}
	mu.Unlock()
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} { // both data shards: beyond 2+1's parity
		for _, f := range shardFiles(t, dir, i) {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	for id := range want {
		_, err := s.Get(ctx, id)
		var de *DamageError
		if !errors.As(err, &de) || de.Chunk != id || de.What != names[id] || !strings.Contains(err.Error(), names[id]) {
			t.Fatalf("Get of a lost chunk = %v, want a DamageError naming %q", err, names[id])
		}
	}
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []chunk.ID
	var gotNames []string
	for _, d := range rep.Damaged {
		if !d.Lost {
			t.Fatalf("segment %016x: not lost with both data shards gone", d.Segment)
		}
		gotIDs = append(gotIDs, d.Chunks...)
		gotNames = append(gotNames, d.Affected...)
	}
	var wantNames []string
	for id := range want {
		wantNames = append(wantNames, names[id])
		if !slices.Contains(gotIDs, chunk.ID(id)) {
			t.Fatalf("scrub does not list lost chunk %s", chunk.ID(id).Short())
		}
	}
	slices.Sort(wantNames)
	slices.Sort(gotNames)
	if !slices.Equal(gotNames, wantNames) {
		t.Fatalf("scrub names %q, want %q", gotNames, wantNames)
	}
}
