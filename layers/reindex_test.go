package layers_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/index"
)

// storeRefs returns the reference count of every chunk in the store's
// index.
func storeRefs(t *testing.T, db *badger.DB) map[chunk.ID]int64 {
	t.Helper()
	out := map[chunk.ID]int64{}
	err := db.View(func(txn *badger.Txn) error {
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

// TestRebuildIndexFromShards is `strata repair --rebuild-index`: with the
// badger index gone, RebuildIndex (store) + RebuildFrom (layers) +
// SetReferences (store, from layers' References) bring back every
// revision, byte for byte, and the reference counts the index had.
func TestRebuildIndexFromShards(t *testing.T) {
	ctx := context.Background()
	dir, cfg := newStoreDir(t, format.Config{DataShards: 2, ParityShards: 1, SegmentSize: 1 << 20})
	keys := crypt.NewKeys([32]byte{4, 4, 4})
	spool := t.TempDir()
	s, err := store.Open(ctx, dir, cfg, keys, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVolume(ctx, "fs", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVolume(ctx, "vm", layers.VolumeSpec{Type: layers.TypeBlock, Size: 2 << 20, BlockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Staging(ctx, "fs")
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(3))
	shared := make([]byte, 200<<10) // deduplicated across files and revisions
	rng.Read(shared)
	var revs []layers.Revision
	for round := 0; round < 4; round++ {
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("f%d", (round*3+i)%8)
			if _, err := st.Tree().Lookup(ctx, layers.RootIno, name); err == nil && i%2 == 0 {
				if err := st.Unlink(ctx, layers.RootIno, name); err != nil {
					t.Fatal(err)
				}
				continue
			}
			a, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("r%d-%d", round, i), 0o644, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, rng.Intn(300<<10))
			rng.Read(p)
			p = append(p, shared...)
			if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
				t.Fatal(err)
			}
			if err := st.FlushFile(ctx, a.Ino, false); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				if _, err := st.Link(ctx, a.Ino, layers.RootIno, name); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Identical files: one chunk, a reference per file.
		for k := 0; k <= round; k++ {
			a, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("same%d-%d", round, k), 0o644, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.WriteAt(ctx, a.Ino, shared, 0); err != nil {
				t.Fatal(err)
			}
		}
		blk := make([]byte, 64<<10)
		rng.Read(blk)
		if _, err := d.WriteAt(ctx, blk, int64(rng.Intn(32))*64<<10); err != nil {
			t.Fatal(err)
		}
		for _, vol := range []string{"fs", "vm"} {
			rev, err := r.Commit(ctx, vol, layers.CommitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			revs = append(revs, rev)
		}
	}
	// A pruned revision stays pruned.
	if err := r.RemoveRevision(ctx, "fs", revs[2].ID); err != nil {
		t.Fatal(err)
	}
	revs = append(revs[:2], revs[3:]...)
	want := map[string]string{}
	for _, rev := range revs {
		want[rev.ID] = revisionImage(t, r, rev)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	origRefs := storeRefs(t, s.DB())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The index is lost.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(ctx, dir, cfg, keys, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.RebuildIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	r, err = layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.RebuildFrom(ctx, s.Walk); err != nil {
		t.Fatal(err)
	}
	rep, err := s.SetReferences(ctx, func(yield func(chunk.ID) error) error { return r.References(ctx, yield) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Missing != 0 || rep.Changed < 2 || rep.Chunks < 20 {
		t.Errorf("report %+v: want no chunk missing, some counts changed, 20+ chunks", rep)
	}
	t.Logf("%d revisions, %+v", len(revs), rep)
	for _, vol := range []string{"fs", "vm"} {
		got, err := r.Revisions(ctx, vol)
		if err != nil {
			t.Fatal(err)
		}
		for _, rev := range got {
			if w, ok := want[rev.ID]; !ok {
				t.Errorf("revision %s of %s came back after prune", rev.ID, vol)
			} else if revisionImage(t, r, rev) != w {
				t.Errorf("revision %s of %s differs after rebuild", rev.ID, vol)
			}
			delete(want, rev.ID)
		}
	}
	if len(want) > 0 {
		t.Errorf("%d revisions lost", len(want))
	}
	gotRefs := storeRefs(t, s.DB())
	for id, n := range origRefs {
		if gotRefs[id] != n {
			t.Errorf("chunk %s: %d references after rebuild, %d before", id.Short(), gotRefs[id], n)
		}
	}
	if len(gotRefs) != len(origRefs) {
		t.Errorf("%d chunks after rebuild, %d before", len(gotRefs), len(origRefs))
	}
}

// revisionImage is a revision's content as one string: every file's
// path, attributes and data hash, or the whole disk.
func revisionImage(t *testing.T, r *layers.Repo, rev layers.Revision) string {
	t.Helper()
	ctx := context.Background()
	if rd, err := r.RevisionDisk(ctx, rev.Volume, rev.ID); err == nil {
		return string(readAll(t, rd))
	}
	tr, err := r.Snapshot(ctx, rev.Volume, rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	return dumpTree(t, tr)
}
