package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/index"
)

// A chunk whose segment is lost beyond parity is stored anew when put
// again, keeping the references it had, and the lost segment goes at GC.
func TestLostChunkStoredAgain(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	data := bytes.Repeat([]byte("a chunk that will be lost "), 1000)
	for range 2 {
		if _, _, err := s.Put(ctx, 1, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	id := s.keys.ID(data)
	loc, _, err := s.locate(id)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := os.Remove(filepath.Join(dir, "shards", strconv.Itoa(i), segName(loc.Segment))); err != nil {
			t.Fatal(err)
		}
	}
	var de *DamageError
	if _, err := s.Get(ctx, id); !errors.As(err, &de) {
		t.Fatalf("Get of the lost chunk: %v, want a DamageError", err)
	}
	if n := s.LostSegments(); n != 1 {
		t.Fatalf("%d segments marked lost after the failed read, want 1", n)
	}

	// Reopened, the mark is still there: the next put stores anew.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	if _, added, err := s.Put(ctx, 1, data); err != nil || !added {
		t.Fatalf("Put of a lost chunk: added=%v, %v; want it stored anew", added, err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	now, _, err := s.locate(id)
	if err != nil {
		t.Fatal(err)
	}
	if now.Segment == loc.Segment || now.Refs != 3 {
		t.Fatalf("after the put: segment %d (lost one %d), %d references; want a new segment and 3", now.Segment, loc.Segment, now.Refs)
	}
	if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the put: %v", err)
	}
	if _, err := s.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := s.LostSegments(); n != 0 {
		t.Errorf("%d segments marked lost after GC deleted the lost one", n)
	}
	err = s.db.View(func(txn *badger.Txn) error {
		_, found, err := index.GetSegment(txn, loc.Segment)
		if found {
			t.Errorf("GC kept the lost segment, though nothing in it is indexed")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
