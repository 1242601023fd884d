package layers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

// checkRefs checks that the layers account for exactly the references
// the store holds.
func checkRefs(t *testing.T, e *env, where string) {
	t.Helper()
	refs := 0
	if err := e.repo.References(context.Background(), func(chunk.ID) error { refs++; return nil }); err != nil {
		t.Fatal(err)
	}
	_, d := e.cs.Refs(chunk.KindData)
	_, m := e.cs.Refs(chunk.KindMeta)
	if refs != d+m {
		t.Fatalf("%s: layers hold %d references, store counts %d data + %d meta", where, refs, d, m)
	}
}

func TestRemoveRevision(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	rng := rand.New(rand.NewSource(21))
	var ids, dumps []string
	for round := 0; round < 6; round++ {
		for i := 0; i < 4; i++ {
			name := fmt.Sprintf("f%d", rng.Intn(6))
			a, err := st.Tree().Lookup(ctx, layers.RootIno, name)
			if errors.Is(err, layers.ErrNotFound) {
				a, err = st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, rng.Intn(600<<10)+1)
			rng.Read(p)
			if _, err := st.WriteAt(ctx, a.Ino, p, int64(rng.Intn(300<<10))); err != nil {
				t.Fatal(err)
			}
		}
		_ = st.Unlink(ctx, layers.RootIno, fmt.Sprintf("f%d", rng.Intn(6)))
		_ = st.Rename(ctx, layers.RootIno, fmt.Sprintf("f%d", rng.Intn(6)), layers.RootIno, fmt.Sprintf("f%d", rng.Intn(6)), 0)
		dumps = append(dumps, dumpTree(t, st.Tree()))
		rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rev.ID)
	}
	// Staging moves on past the last revision.
	a, _ := st.Create(ctx, layers.RootIno, "staged", 0o644, 0, 0, 0)
	if _, err := st.WriteAt(ctx, a.Ino, []byte("not committed"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	staged := dumpTree(t, st.Tree())
	checkRefs(t, e, "before prune")
	removed := map[int]bool{}
	check := func(where string) {
		t.Helper()
		for i, id := range ids {
			tr, err := e.repo.Snapshot(ctx, "v", id)
			if removed[i] {
				if !errors.Is(err, layers.ErrUnknownRevision) {
					t.Fatalf("%s: removed revision %d: %v", where, i, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := dumpTree(t, tr); got != dumps[i] {
				t.Fatalf("%s: revision %d changed:\n got %s\nwant %s", where, i, got, dumps[i])
			}
		}
		if got := dumpTree(t, st.Tree()); got != staged {
			t.Fatalf("%s: staging changed", where)
		}
		checkRefs(t, e, where)
	}
	for _, i := range []int{2, 0, 5, 3} {
		if err := e.repo.RemoveRevision(ctx, "v", ids[i]); err != nil {
			t.Fatal(err)
		}
		removed[i] = true
		check(fmt.Sprintf("after removing %d", i))
	}
	revs, _ := e.repo.Revisions(ctx, "v")
	if len(revs) != 2 || revs[0].ID != ids[1] || revs[1].ID != ids[4] {
		t.Fatalf("revisions left: %+v", revs)
	}
	// A rebuilt index keeps removed revisions removed and the rest intact.
	fresh := &env{cs: e.cs, spool: t.TempDir()}
	fresh.open(t)
	if _, err := fresh.repo.RebuildFrom(ctx, e.cs.Walk); err != nil {
		t.Fatal(err)
	}
	frevs, err := fresh.repo.Revisions(ctx, "v")
	if err != nil || len(frevs) != 2 || frevs[0].ID != ids[1] || frevs[1].ID != ids[4] {
		t.Fatalf("revisions after rebuild: %+v, %v", frevs, err)
	}
	for _, i := range []int{1, 4} {
		tr, err := fresh.repo.Snapshot(ctx, "v", ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpTree(t, tr); got != dumps[i] {
			t.Fatalf("revision %d after rebuild differs", i)
		}
	}
	// The rebuilt index holds what the original holds except the one
	// chunk of the never-committed staged file.
	count := func(r *layers.Repo) int {
		n := 0
		if err := r.References(ctx, func(chunk.ID) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got, want := count(fresh.repo), count(e.repo)-1; got != want {
		t.Fatalf("rebuilt index holds %d references, want %d", got, want)
	}
	// Remove the rest; then the volume: nothing may be left.
	for _, i := range []int{4, 1} {
		if err := e.repo.RemoveRevision(ctx, "v", ids[i]); err != nil {
			t.Fatal(err)
		}
		removed[i] = true
	}
	check("all revisions removed")
	if err := e.repo.RemoveVolume(ctx, "v", false); err != nil {
		t.Fatal(err)
	}
	for _, k := range []chunk.Kind{chunk.KindData, chunk.KindMeta} {
		if chunks, refs := e.cs.Refs(k); chunks != 0 || refs != 0 {
			t.Errorf("after removing the volume: %d %v chunks with %d refs", chunks, k, refs)
		}
	}
}

// releaseFails is the real store with Release failing while fail is set:
// the state a crash leaves between a revision's removal and its releases.
type releaseFails struct {
	*store.Store
	fail bool
}

var errInjected = errors.New("injected release failure")

func (s *releaseFails) Release(ctx context.Context, ids []chunk.ID) error {
	if s.fail {
		return errInjected
	}
	return s.Store.Release(ctx, ids)
}

// TestRemoveRevisionInterrupted: a removal whose chunk releases never
// reach the store leaves reference counts too high (space, never data);
// FinishRemovals recounts them, and a GC then frees the removed revision's
// data.
// Steps: four revisions over the real store, each rewriting a 300 KiB
// file; remove revision 1 with Release failing; reopen; FinishRemovals
// with the store's SetReferences; GC.
// Pass: the failed removal is reported and pending; the revision is gone
// and the others read back; after FinishRemovals nothing is pending and
// the store counts exactly the references layers hold; GC frees bytes.
func TestRemoveRevisionInterrupted(t *testing.T) {
	ctx := context.Background()
	dir, cfg := newStoreDir(t, format.Config{DataShards: 2, ParityShards: 1, SegmentSize: 1 << 20})
	keys := crypt.NewKeys([32]byte{5, 5, 5})
	spool := t.TempDir()
	open := func() (*releaseFails, *layers.Repo) {
		t.Helper()
		s, err := store.Open(ctx, dir, cfg, keys, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		fs := &releaseFails{Store: s}
		r, err := layers.Open(ctx, s.DB(), fs, layers.Options{SpoolDir: spool})
		if err != nil {
			t.Fatal(err)
		}
		return fs, r
	}
	s, r := open()
	if _, err := r.CreateVolume(ctx, "v", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Staging(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(33))
	var ids, dumps []string
	for i := 0; i < 4; i++ {
		p := make([]byte, 300<<10)
		rng.Read(p)
		if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
			t.Fatal(err)
		}
		dumps = append(dumps, dumpTree(t, st.Tree()))
		rev, err := r.Commit(ctx, "v", layers.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rev.ID)
	}
	s.fail = true
	if err := r.RemoveRevision(ctx, "v", ids[1]); !errors.Is(err, errInjected) {
		t.Fatalf("remove with failing releases: %v, want the injected failure", err)
	}
	if pending, err := r.RemovalsPending(ctx); err != nil || !pending {
		t.Fatalf("after an interrupted removal: pending %v, %v; want true", pending, err)
	}
	// A restart: nothing of the failed releases is in the store.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, r = open()
	t.Cleanup(func() { r.Close(); s.Close() })
	if pending, err := r.RemovalsPending(ctx); err != nil || !pending {
		t.Fatalf("after reopening: pending %v, %v; want true", pending, err)
	}
	refsTotal := func() (layerRefs, storeTotal int64) {
		t.Helper()
		if err := s.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.References(ctx, func(chunk.ID) error { layerRefs++; return nil }); err != nil {
			t.Fatal(err)
		}
		for _, n := range storeRefs(t, s.DB()) {
			storeTotal += n
		}
		return layerRefs, storeTotal
	}
	if l, st := refsTotal(); st <= l {
		t.Fatalf("before finishing: store counts %d references, layers hold %d; want more in the store (the lost releases)", st, l)
	}
	n, err := r.FinishRemovals(ctx, func(ctx context.Context, refs func(yield func(chunk.ID) error) error) error {
		_, err := s.SetReferences(ctx, refs)
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("FinishRemovals = %d, %v; want 1 removal finished", n, err)
	}
	if pending, err := r.RemovalsPending(ctx); err != nil || pending {
		t.Fatalf("after FinishRemovals: pending %v, %v; want false", pending, err)
	}
	if l, st := refsTotal(); st != l {
		t.Fatalf("after FinishRemovals: store counts %d references, layers hold %d", st, l)
	}
	gc, err := s.GC(ctx, store.GCOptions{MaxUnused: 1e-9})
	if err != nil {
		t.Fatal(err)
	}
	if gc.ChunksFreed == 0 || gc.BytesFreed < 300<<10 {
		t.Errorf("GC after finishing the removal: %+v; want the removed revision's 300 KiB freed", gc)
	}
	for i, id := range ids {
		tr, err := r.Snapshot(ctx, "v", id)
		if i == 1 {
			if !errors.Is(err, layers.ErrUnknownRevision) {
				t.Errorf("removed revision: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpTree(t, tr); got != dumps[i] {
			t.Errorf("revision %d changed", i)
		}
	}
	// Nothing pending: a second call has nothing to do and no recount.
	n, err = r.FinishRemovals(ctx, func(context.Context, func(func(chunk.ID) error) error) error {
		return errors.New("recount without pending removals")
	})
	if err != nil || n != 0 {
		t.Errorf("second FinishRemovals = %d, %v", n, err)
	}
}
