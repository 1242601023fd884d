package layers_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

// volatileStore keeps Puts in memory until Flush; with lose set, Flush
// drops them instead, as a crash before the store made them durable would.
type volatileStore struct {
	*memstore.Store
	mu      sync.Mutex
	pending map[chunk.ID][]byte
	lose    bool
}

func (s *volatileStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose {
		id := chunk.ID{byte(len(s.pending) + 1), 0xee}
		s.pending[id] = append([]byte(nil), data...)
		return id, true, nil
	}
	return s.Store.Put(ctx, kind, data)
}

func (s *volatileStore) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = map[chunk.ID][]byte{} // lost
	return nil
}

func TestRecoverAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir, spool := t.TempDir(), t.TempDir()
	cs := &volatileStore{Store: memstore.New(), pending: map[chunk.ID][]byte{}}
	db := openDB(t, dir)
	r, err := layers.Open(ctx, db, cs, layers.Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVolume(ctx, "v", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, _ := r.Staging(ctx, "v")
	good := bytes.Repeat([]byte("g"), 10000)
	a, _ := st.Create(ctx, layers.RootIno, "durable", 0o644, 0, 0, 0)
	writeDurable(t, st, a.Ino, good)
	// The next file's records reach the index but its chunk never
	// reaches the store.
	cs.lose = true
	b, _ := st.Create(ctx, layers.RootIno, "lost", 0o644, 0, 0, 0)
	writeDurable(t, st, b.Ino, bytes.Repeat([]byte("l"), 5000))
	c, _ := st.Create(ctx, layers.RootIno, "lost-then-removed", 0o644, 0, 0, 0)
	writeDurable(t, st, c.Ino, bytes.Repeat([]byte("r"), 3000))
	// Crash: the index survives, the layers never close.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cs.lose = false

	db2 := openDB(t, dir)
	t.Cleanup(func() { db2.Close() })
	r2, err := layers.Open(ctx, db2, cs, layers.Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	st2, _ := r2.Staging(ctx, "v")
	buf := make([]byte, 10000)
	if n, err := st2.Tree().ReadAt(ctx, a.Ino, buf, 0); err != nil || !bytes.Equal(buf[:n], good) {
		t.Fatalf("durable file after crash: %d, %v", n, err)
	}
	// The lost file reads as a hole, not as an error. A commit refuses
	// it (the revision would keep zeros) until told to keep it ...
	if n, err := st2.Tree().ReadAt(ctx, b.Ino, buf, 0); err != nil || n != 5000 || !bytes.Equal(buf[:n], make([]byte, n)) {
		t.Fatalf("lost file after crash: %d, %v", n, err)
	}
	var le *layers.LostDataError
	if _, err := r2.Commit(ctx, "v", layers.CommitOptions{}); !errors.As(err, &le) || le.Files != 2 {
		t.Fatalf("commit with two lost files: %v, want a LostDataError for 2 files", err)
	}
	if !slices.Equal(le.Paths, []string{"lost", "lost-then-removed"}) {
		t.Errorf("LostDataError names %q, want the two files", le.Paths)
	}
	if _, err := r2.Commit(ctx, "v", layers.CommitOptions{AllowLost: true}); err != nil {
		t.Fatal(err)
	}
	// ... across a clean restart ...
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	r3, err := layers.Open(ctx, db2, cs, layers.Options{SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r3.Close() })
	if _, err := r3.Commit(ctx, "v", layers.CommitOptions{}); !errors.As(err, &le) {
		t.Fatalf("commit with a lost file after a restart: %v, want a LostDataError", err)
	}
	// ... or until each file is removed or written again.
	st3, _ := r3.Staging(ctx, "v")
	if err := st3.Unlink(ctx, layers.RootIno, "lost-then-removed"); err != nil {
		t.Fatal(err)
	}
	if _, err := r3.Commit(ctx, "v", layers.CommitOptions{}); !errors.As(err, &le) || le.Files != 1 {
		t.Fatalf("commit with one of two lost files removed: %v, want a LostDataError for 1 file", err)
	}
	// Part of it written again leaves zeros where the rest was.
	writeDurable(t, st3, b.Ino, bytes.Repeat([]byte("p"), 1000))
	if _, err := r3.Commit(ctx, "v", layers.CommitOptions{}); !errors.As(err, &le) || le.Files != 1 {
		t.Fatalf("commit with a lost file written again in part: %v, want a LostDataError for 1 file", err)
	}
	writeDurable(t, st3, b.Ino, bytes.Repeat([]byte("n"), 5000))
	if _, err := r3.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
		t.Fatalf("commit after the lost file was written again: %v", err)
	}
}

// writeDurable writes data at the start of file ino and makes it durable.
func writeDurable(t *testing.T, st *layers.Staging, ino layers.Ino, data []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.WriteAt(ctx, ino, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FlushFile(ctx, ino, true); err != nil {
		t.Fatal(err)
	}
}
