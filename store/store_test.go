package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/index"
)

func checkAll(t *testing.T, s *Store, want map[[32]byte][]byte) {
	t.Helper()
	for id, b := range want {
		got, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("Get %x: %v", id[:4], err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("Get %x: %d bytes differ from the %d put", id[:4], len(got), len(b))
		}
	}
}

func TestRoundTripAndReopen(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 1, 60, 200_000)
	checkAll(t, s, want) // from memory and sealed segments
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks != int64(len(want)) || st.Segments < 2 || st.Capacity == 0 || st.Free == 0 {
		t.Fatalf("Stats = %+v, want %d chunks in several segments", st, len(want))
	}
	if _, err := s.Get(ctx, chunk.ID{9}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
	if ok, err := s.Has(ctx, chunk.ID{9}); ok || err != nil {
		t.Fatalf("Has unknown = %v, %v", ok, err)
	}
}

func TestDedup(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	data := bytes.Repeat([]byte("strata dedup "), 50_000)
	id1, added1, err := s.Put(ctx, chunk.KindData, data)
	if err != nil || !added1 {
		t.Fatalf("first Put: added=%v err=%v", added1, err)
	}
	id2, added2, err := s.Put(ctx, chunk.KindData, data)
	if err != nil || added2 || id1 != id2 {
		t.Fatalf("second Put: id equal=%v added=%v err=%v", id1 == id2, added2, err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, added3, _ := s.Put(ctx, chunk.KindData, data); added3 {
		t.Fatal("Put after Flush stored a duplicate")
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	if _, added, _ := s.Put(ctx, chunk.KindData, data); added {
		t.Fatal("Put after reopen stored a duplicate")
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := refsOf(t, s, id1); r != 4 {
		t.Fatalf("refs = %d, want 4", r)
	}
	st, _ := s.Stats(ctx)
	if st.Chunks != 1 {
		t.Fatalf("Stats.Chunks = %d, want 1", st.Chunks)
	}
}

func refsOf(t *testing.T, s *Store, id chunk.ID) int64 {
	t.Helper()
	s.mu.Lock()
	if m, ok := s.mem[id]; ok {
		defer s.mu.Unlock()
		return m.refs
	}
	s.mu.Unlock()
	loc, _, err := s.locate(id)
	if err != nil {
		t.Fatal(err)
	}
	return loc.Refs
}

func TestLocked(t *testing.T) {
	dir, cfg := testRepo(t, 2, 1)
	openStore(t, dir, cfg, Options{})
	_, err := Open(context.Background(), dir, cfg, crypt.NewKeys(testMaster), Options{})
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || !strings.Contains(err.Error(), "repository is locked by PID") {
		t.Fatalf("second Open = %v, want LockedError with our PID", err)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	dir, cfg := testRepo(t, 2, 1)
	if err := Create(context.Background(), dir, cfg); err == nil {
		t.Fatal("Create over an existing repository succeeded")
	}
}

func TestWrongKey(t *testing.T) {
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	putRandom(t, s, 1, 3, 1000)
	s.Close()
	_, err := Open(context.Background(), dir, cfg, crypt.NewKeys([32]byte{7}), Options{})
	if err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("Open with another key = %v, want a key mismatch", err)
	}
}

func TestMissingShardDir(t *testing.T) {
	// One missing dir of 2+1 runs degraded (TestDegradedShardDirs); two
	// are more than parity covers.
	dir, cfg := testRepo(t, 2, 1)
	for _, i := range []string{"1", "2"} {
		if err := os.RemoveAll(filepath.Join(dir, "shards", i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Open(context.Background(), dir, cfg, crypt.NewKeys(testMaster), Options{})
	var se *ShardDirError
	if !errors.As(err, &se) || se.Index != 1 || !strings.Contains(err.Error(), "scrub --repair") {
		t.Fatalf("Open with a missing shard dir = %v", err)
	}
}

const lockEnv = "STRATA_STORE_LOCK_CHILD"

// TestLockChild is the second process of TestLockedOtherProcess.
func TestLockChild(t *testing.T) {
	dir := os.Getenv(lockEnv)
	if dir == "" {
		return
	}
	_, err := Open(context.Background(), dir, mustLoad(t, dir), newKeys(), Options{})
	fmt.Println("OPEN:", err)
}

func TestLockedOtherProcess(t *testing.T) {
	if os.Getenv(lockEnv) != "" {
		return
	}
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	out, err := childTest(t, "TestLockChild", lockEnv+"="+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("OPEN: repository is locked by PID %d", os.Getpid())
	if !strings.Contains(string(out), want) {
		t.Fatalf("child output %q, want %q", out, want)
	}
	// Once released, another process may open it.
	s.Close()
	if out, _ = childTest(t, "TestLockChild", lockEnv+"="+dir).CombinedOutput(); !strings.Contains(string(out), "OPEN: <nil>") {
		t.Fatalf("child after Close: %s", out)
	}
}

// TestManyTinyChunks fills segments by chunk count rather than bytes, so
// each segment's index records still commit in one transaction.
func TestManyTinyChunks(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	want := map[[32]byte][]byte{}
	for i := range maxSegChunks + 1000 {
		b := []byte(fmt.Sprintf("tiny record %d", i))
		id, _, err := s.Put(ctx, chunk.KindMeta, b)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = b
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Stats(ctx)
	if st.Segments != 1 || st.Chunks != maxSegChunks {
		t.Fatalf("Stats = %+v, want one sealed segment of %d chunks", st, maxSegChunks)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	n := 0
	if err := s.Walk(ctx, chunk.KindMeta, func(chunk.ID, []byte) error { n++; return nil }); err != nil || n != len(want) {
		t.Fatalf("Walk saw %d meta chunks, %v; want %d", n, err, len(want))
	}
}

// TestSaveReferences: reference changes of indexed chunks reach the index
// at SaveReferences, before any Flush (layers writes its records right
// after), in both directions.
func TestSaveReferences(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	data := bytes.Repeat([]byte("saved reference "), 4096)
	id, _, err := s.Put(ctx, chunk.KindData, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	indexed := func() int64 {
		t.Helper()
		var c index.Chunk
		err := s.db.View(func(txn *badger.Txn) error {
			var found bool
			var err error
			if c, found, err = index.GetChunk(txn, id); err == nil && !found {
				err = fmt.Errorf("chunk %s not indexed", id.Short())
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return c.Refs
	}
	prev := int64(1)
	for _, step := range []struct {
		name string
		op   func() error
		want int64
	}{
		{"put again (dedup)", func() error { _, _, err := s.Put(ctx, chunk.KindData, data); return err }, 2},
		{"put a third time", func() error { _, _, err := s.Put(ctx, chunk.KindData, data); return err }, 3},
		{"release one", func() error { return s.Release(ctx, []chunk.ID{id}) }, 2},
	} {
		if err := step.op(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := indexed(); got != prev {
			t.Fatalf("%s: index has %d references before SaveReferences, want %d (still in memory)", step.name, got, prev)
		}
		if err := s.SaveReferences(ctx); err != nil {
			t.Fatalf("%s: save: %v", step.name, err)
		}
		if got := indexed(); got != step.want {
			t.Fatalf("%s: index has %d references after SaveReferences, want %d", step.name, got, step.want)
		}
		prev = step.want
	}
	s.Close()
	if err := s.SaveReferences(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("SaveReferences after Close: %v, want ErrClosed", err)
	}
}

// The journaled case of SaveReferences needs a process that dies without
// closing the store: TestSaveReferencesJournaled runs the test binary
// again as this child.
const saveRefsChildEnv = "STRATA_STORE_SAVEREFS_CHILD"

// TestSaveReferencesJournaledChild (the child): put a chunk, Flush (the
// journal now holds it with one reference), put it again (a second, in
// memory), SaveReferences, and exit without closing.
func TestSaveReferencesJournaledChild(t *testing.T) {
	dir := os.Getenv(saveRefsChildEnv)
	if dir == "" {
		return // only runs as the child of TestSaveReferencesJournaled
	}
	ctx := context.Background()
	s, err := Open(ctx, dir, mustLoad(t, dir), newKeys(), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	data := bytes.Repeat([]byte("journaled reference "), 4096)
	for i, step := range []func() error{
		func() error { _, _, err := s.Put(ctx, chunk.KindData, data); return err },
		func() error { return s.Flush(ctx) },
		func() error { _, _, err := s.Put(ctx, chunk.KindData, data); return err },
		func() error { return s.SaveReferences(ctx) },
	} {
		if err := step(); err != nil {
			fmt.Fprintln(os.Stderr, "child step", i, err)
			os.Exit(4)
		}
	}
	os.Exit(0)
}

// TestSaveReferencesJournaled: a reference added to a chunk that is
// journaled but not yet sealed survives a process exit right after
// SaveReferences. Before, SaveReferences wrote only the indexed chunks'
// counts, and the reopened store had one reference where layers' records
// named the chunk twice.
func TestSaveReferencesJournaled(t *testing.T) {
	if os.Getenv(saveRefsChildEnv) != "" {
		return
	}
	dir, cfg := testRepo(t, 2, 1)
	if out, err := childTest(t, "TestSaveReferencesJournaledChild", saveRefsChildEnv+"="+dir).CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	s := openStore(t, dir, cfg, Options{})
	id := crypt0(s, bytes.Repeat([]byte("journaled reference "), 4096))
	if got := refsOf(t, s, id); got != 2 {
		t.Fatalf("after the child exited: %d references, want 2", got)
	}
}
