package layers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
)

// TestCommitCompactsIndex: after a commit, the index ends up in one LSM
// level, where badger itself would have left overlapping level-0 tables
// (see index.Tidy for why that matters), and the revision reads whole.
func TestCommitCompactsIndex(t *testing.T) {
	ctx := context.Background()
	// Small memtables, so a few thousand files make several tables.
	opts := badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(1 << 20).WithValueThreshold(1 << 10)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := layers.Open(ctx, db, memstore.New(), layers.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Close()
		_ = db.Close()
	})
	st := fsVolume(t, r)
	levels := func() map[int]int {
		m := map[int]int{}
		for _, ti := range db.Tables() {
			m[ti.Level]++
		}
		return m
	}
	// Create files until badger has compacted some tables below level 0
	// and new ones arrived on top: the shape a backup leaves.
	files := 0
	for l := levels(); l[0] == 0 || len(l) < 2; l = levels() {
		if files >= 100000 {
			t.Fatalf("index in levels %v after %d files; the test no longer sets up its case", l, files)
		}
		for range 1000 {
			if _, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("file-%06d", files), 0o644, 0, 0, 0); err != nil {
				t.Fatal(err)
			}
			files++
		}
		if err := st.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tr := commitV(t, r)
	// The compaction runs after Commit returns; a generous deadline,
	// not a timing claim.
	deadline := time.Now().Add(30 * time.Second)
	for l := levels(); len(l) != 1; l = levels() {
		if time.Now().After(deadline) {
			t.Fatalf("index levels %v 30 s after commit; want one level", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := 0
	if err := tr.ReadDir(ctx, layers.RootIno, "", func(layers.Dirent) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != files {
		t.Errorf("revision lists %d files after compaction, want %d", n, files)
	}
}
