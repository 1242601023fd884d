package layers_test

import (
	"context"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

type env struct {
	repo  *layers.Repo
	cs    *memstore.Store
	db    *badger.DB
	dir   string // badger dir ("" = in memory)
	spool string
	now   func() time.Time // layers' clock; nil: time.Now
}

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithBlockCacheSize(8 << 20)
	if dir == "" {
		opts = opts.WithInMemory(true)
	}
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	return db
}

// newEnv opens a repo over badger (in memory unless onDisk) and a memstore.
func newEnv(t testing.TB, onDisk bool) *env {
	t.Helper()
	e := &env{cs: memstore.New(), spool: t.TempDir()}
	if onDisk {
		e.dir = t.TempDir()
	}
	e.open(t)
	return e
}

func (e *env) open(t testing.TB) {
	t.Helper()
	e.db = openDB(t, e.dir)
	r, err := layers.Open(context.Background(), e.db, e.cs, layers.Options{SpoolDir: e.spool, Now: e.now})
	if err != nil {
		t.Fatalf("open layers: %v", err)
	}
	e.repo = r
	db := e.db
	t.Cleanup(func() {
		_ = r.Close()
		_ = db.Close()
	})
}

// reopen closes repo and DB and opens them again (on-disk envs only).
func (e *env) reopen(t testing.TB) {
	t.Helper()
	if err := e.repo.Close(); err != nil {
		t.Fatalf("close layers: %v", err)
	}
	if err := e.db.Close(); err != nil {
		t.Fatalf("close badger: %v", err)
	}
	e.open(t)
}

// repoOver opens a repo over cs (badger in memory) with one fs volume,
// "v", and returns it with that volume's staging.
func repoOver(t testing.TB, cs layers.ChunkStore) (*layers.Repo, *layers.Staging) {
	t.Helper()
	ctx := context.Background()
	db := openDB(t, "")
	r, err := layers.Open(ctx, db, cs, layers.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Close()
		_ = db.Close()
	})
	return r, fsVolume(t, r)
}

// repoOverRealStore is repoOver with the real store (encrypted, erasure
// coded, its own badger index on disk) under the repo.
func repoOverRealStore(t testing.TB) (*layers.Repo, *layers.Staging) {
	t.Helper()
	ctx := context.Background()
	dir, cfg := newStoreDir(t, format.Config{DataShards: 2, ParityShards: 1, SegmentSize: 4 << 20})
	s, err := store.Open(ctx, dir, cfg, crypt.NewKeys([32]byte{3}), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r, err := layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, fsVolume(t, r)
}

// commitV commits volume "v" of r and returns the new revision's tree.
func commitV(t testing.TB, r *layers.Repo) *layers.Tree {
	t.Helper()
	ctx := context.Background()
	rev, err := r.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := r.Snapshot(ctx, "v", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// fsVolume creates the fs volume "v" in r and returns its staging.
func fsVolume(t testing.TB, r *layers.Repo) *layers.Staging {
	t.Helper()
	ctx := context.Background()
	if _, err := r.CreateVolume(ctx, "v", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Staging(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *env) staging(t testing.TB, name string) *layers.Staging {
	t.Helper()
	ctx := context.Background()
	if _, err := e.repo.Volume(ctx, name); err != nil {
		if _, err := e.repo.CreateVolume(ctx, name, layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
			t.Fatalf("create volume: %v", err)
		}
	}
	st, err := e.repo.Staging(ctx, name)
	if err != nil {
		t.Fatalf("staging: %v", err)
	}
	return st
}

// newStoreDir creates a real store with config c in a temporary directory
// and returns the directory and the config as stored (defaults filled).
func newStoreDir(t testing.TB, c format.Config) (string, format.Config) {
	t.Helper()
	dir := t.TempDir()
	if err := store.Create(context.Background(), dir, c); err != nil {
		t.Fatal(err)
	}
	cfg, err := format.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}
