package store

import (
	"context"
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/index"
)

// indexRefs returns every indexed chunk's reference count.
func indexRefs(t *testing.T, s *Store) map[chunk.ID]int64 {
	t.Helper()
	out := map[chunk.ID]int64{}
	err := s.db.View(func(txn *badger.Txn) error {
		return index.EachChunk(txn, func(id chunk.ID, c index.Chunk) error {
			out[id] = c.Refs
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSetReferences: after RebuildIndex (one reference each), counts from
// the metadata restore the true counts, unreferenced chunks go at GC, and
// referenced ones stay readable.
func TestSetReferences(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	data := putRandom(t, s, 7, 40, 64<<10)
	var ids []chunk.ID
	for id := range data {
		ids = append(ids, id)
	}
	// Extra references on some chunks, as dedup would add.
	for i, id := range ids[:10] {
		for range i + 1 {
			if _, added, err := s.Put(ctx, 1, data[id]); err != nil || added {
				t.Fatalf("dedup put: added %v, %v", added, err)
			}
		}
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	orig := indexRefs(t, s)
	if len(orig) != len(data) {
		t.Fatalf("%d chunks indexed, want %d", len(orig), len(data))
	}
	if err := s.RebuildIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// The metadata still references all but the last five chunks; the
	// counts come in any order, one call per reference.
	live := ids[:len(ids)-5]
	missing := chunk.ID{0xde, 0xad}
	counts := func(yield func(chunk.ID) error) error {
		for _, id := range live {
			for range orig[id] {
				if err := yield(id); err != nil {
					return err
				}
			}
		}
		return yield(missing)
	}
	rep, err := s.SetReferences(ctx, counts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != int64(len(data)) || rep.Unreferenced != 5 || rep.Missing != 1 {
		t.Errorf("report %+v: want %d chunks, 5 unreferenced, 1 missing", rep, len(data))
	}
	got := indexRefs(t, s)
	for _, id := range ids {
		want := orig[id]
		if indexOf(ids, id) >= len(live) {
			want = 0
		}
		if got[id] != want {
			t.Errorf("chunk %s: %d references, want %d", id.Short(), got[id], want)
		}
	}
	if p, err := s.ReferencesPending(ctx); err != nil || p {
		t.Errorf("pending after a complete run: %v, %v", p, err)
	}
	// A second run changes nothing.
	if rep, err := s.SetReferences(ctx, counts); err != nil || rep.Changed != 0 {
		t.Errorf("second run: %+v, %v", rep, err)
	}
	if _, err := s.GC(ctx, GCOptions{MaxUnused: 0.01}); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		b, err := s.Get(ctx, id)
		switch {
		case i < len(live) && (err != nil || string(b) != string(data[id])):
			t.Errorf("referenced chunk %s after GC: %v", id.Short(), err)
		case i >= len(live) && !errors.Is(err, ErrNotFound):
			t.Errorf("unreferenced chunk %s after GC: %v, want ErrNotFound", id.Short(), err)
		}
	}
}

func indexOf(ids []chunk.ID, id chunk.ID) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// TestSetReferencesOpenSegment: chunks still in the open segment (memory
// and journal) get their counts too, and keep them across a reopen.
func TestSetReferencesOpenSegment(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s, err := Open(ctx, dir, cfg, newKeys(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := s.Put(ctx, 1, []byte("chunk a"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s.Put(ctx, 1, []byte("chunk b"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.SetReferences(ctx, func(yield func(chunk.ID) error) error {
		for range 3 {
			if err := yield(a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != 2 || rep.Unreferenced != 1 || rep.Changed != 2 {
		t.Errorf("report %+v: want 2 chunks, 1 unreferenced, 2 changed", rep)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	got := indexRefs(t, s)
	if got[a] != 3 || got[b] != 0 {
		t.Errorf("after reopen and seal: a %d b %d references, want 3 and 0", got[a], got[b])
	}
}
