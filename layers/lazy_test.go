package layers_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand"
	"sync/atomic"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

// countingStore counts what layers asks of a memstore.
type countingStore struct {
	*memstore.Store
	gets, puts, retained atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

func (s *countingStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	s.puts.Add(1)
	return s.Store.Put(ctx, kind, data)
}

func (s *countingStore) Retain(ctx context.Context, ids []chunk.ID) error {
	s.retained.Add(int64(len(ids)))
	return s.Store.Retain(ctx, ids)
}

// layerRefs counts the references the layers' records hold, per chunk.
func layerRefs(t *testing.T, r *layers.Repo) map[chunk.ID]int {
	t.Helper()
	out := map[chunk.ID]int{}
	if err := r.References(context.Background(), func(id chunk.ID) error { out[id]++; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkRefsExact checks that each chunk holds exactly the references the
// layers' records account for; no file may be open (open files hold
// references no record names yet).
func checkRefsExact(t *testing.T, r *layers.Repo, cs *memstore.Store, where string) {
	t.Helper()
	want, got := layerRefs(t, r), cs.Counts()
	if maps.Equal(got, want) {
		return
	}
	diff := 0
	for id, n := range got {
		if want[id] != n {
			diff++
			if diff <= 3 {
				t.Errorf("%s: chunk %s has %d references, the layers hold %d", where, id.Short(), n, want[id])
			}
		}
	}
	for id, n := range want {
		if _, ok := got[id]; !ok {
			diff++
			if diff <= 3 {
				t.Errorf("%s: chunk %s is gone, the layers hold %d references", where, id.Short(), n)
			}
		}
	}
	t.Fatalf("%s: %d chunks with wrong counts", where, diff)
}

// committedFile creates "big" with data, commits it and returns its inode.
func committedFile(t *testing.T, r *layers.Repo, st *layers.Staging, data []byte) layers.Ino {
	t.Helper()
	ctx := context.Background()
	a, err := st.Create(ctx, layers.RootIno, "big", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := st.WriteAt(ctx, a.Ino, data[off:min(off+1<<20, len(data))], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	commitV(t, r)
	return a.Ino
}

// TestLazyBaseInPlaceWrite: a 4 KiB write into a large committed file
// reads only the chunks it overlaps, stores only the chunks of that
// region anew, and the new extent map keeps every other chunk of the
// base (a lazy base, early.go). Before, the first write copied the whole
// file into the spool (a Get per chunk) and the flush put every chunk
// again.
func TestLazyBaseInPlaceWrite(t *testing.T) {
	ctx := context.Background()
	cs := &countingStore{Store: memstore.New()}
	r, st := earlyRepoOver(t, cs, 0)
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(5)).Read(data)
	ino := committedFile(t, r, st, data)
	base := layerRefs(t, r) // the revision's data chunks and meta chunks
	baseData, _ := cs.Refs(chunk.KindData)
	if baseData < 100 {
		t.Fatalf("the base has %d chunks; the test wants many", baseData)
	}
	cs.gets.Store(0)
	cs.puts.Store(0)

	const off = 5<<20 + 123
	p := bytes.Repeat([]byte("in place"), 512)
	if _, err := st.WriteAt(ctx, ino, p, off); err != nil {
		t.Fatal(err)
	}
	copy(data[off:], p)
	if n := cs.retained.Load(); n != int64(baseData) {
		t.Errorf("the write retained %d chunks, want the base's %d", n, baseData)
	}
	if err := st.FlushFile(ctx, ino, true); err != nil {
		t.Fatal(err)
	}
	// The write overlaps one chunk, at most two.
	if n := cs.gets.Load(); n > 2 {
		t.Errorf("write and flush read %d chunks, want at most 2 (the ones the write overlaps) of %d", n, baseData)
	}
	// Chunks are 8-128 KiB here: two rechunked make a handful.
	if n := cs.puts.Load(); n > 8 {
		t.Errorf("the flush put %d chunks, want a handful (the rewritten region) of %d", n, baseData)
	}
	checkRefsExact(t, r, cs.Store, "after the flush")
	// The staging map's references are what the flush added.
	now := layerRefs(t, r)
	kept, fresh := 0, 0
	for id, n := range now {
		if d := n - base[id]; d > 0 {
			if base[id] > 0 {
				kept += d
			} else {
				fresh += d
			}
		}
	}
	if kept < baseData-2 || fresh > 8 {
		t.Errorf("the new extent map keeps %d of the base's %d chunks and has %d new ones; want all but at most 2 kept", kept, baseData, fresh)
	}
	got := make([]byte, len(data))
	if n, err := st.Tree().ReadAt(ctx, ino, got, 0); err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("read after the flush: %d bytes, %v; equal %v", n, err, bytes.Equal(got, data))
	}
	check := commitV(t, r)
	if n, err := check.ReadAt(ctx, ino, got, 0); err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("read of the revision: %d bytes, %v; equal %v", n, err, bytes.Equal(got, data))
	}
	checkRefsExact(t, r, cs.Store, "after the commit")
}

// TestLazyBaseReleases: the references a file takes over when it is
// opened for writing go back when it goes without being flushed, and move
// to the new extent map, exactly once each, when it is flushed.
func TestLazyBaseReleases(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		change    func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64)
		unchanged bool // the store's counts stay as they were
	}{
		{name: "empty write", unchanged: true, change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			if _, err := st.WriteAt(ctx, ino, nil, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncate to the same size", unchanged: true, change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			if _, err := st.SetAttr(ctx, ino, layers.SetAttr{Size: &size}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "write, unlink", unchanged: true, change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			if _, err := st.WriteAt(ctx, ino, []byte("x"), size/2); err != nil {
				t.Fatal(err)
			}
			if err := st.Unlink(ctx, layers.RootIno, "big"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "write, truncate to zero", change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			if _, err := st.WriteAt(ctx, ino, []byte("x"), size/2); err != nil {
				t.Fatal(err)
			}
			zero := int64(0)
			if _, err := st.SetAttr(ctx, ino, layers.SetAttr{Size: &zero}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "write", change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			if _, err := st.WriteAt(ctx, ino, []byte("x"), size/2); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncate shorter", change: func(t *testing.T, st *layers.Staging, ino layers.Ino, size int64) {
			half := size/2 + 1000
			if _, err := st.SetAttr(ctx, ino, layers.SetAttr{Size: &half}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, cs, st := earlyRepo(t, 0)
			data := make([]byte, 2<<20)
			rand.New(rand.NewSource(6)).Read(data)
			copy(data[1<<20:], data[:256<<10]) // chunks used twice
			ino := committedFile(t, r, st, data)
			before := cs.Counts()
			tc.change(t, st, ino, int64(len(data)))
			if err := st.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			checkRefsExact(t, r, cs, "after the change and a sync")
			if got := cs.Counts(); tc.unchanged && !maps.Equal(got, before) {
				t.Fatalf("reference counts changed: %d chunks before, %d after", len(before), len(got))
			}
		})
	}
}

// TestLazyBaseRandomOps starts from a committed file of many chunks and
// rewrites it in place at random offsets, with truncates, writes past the
// end, flushes, commits, early stores and removals of revisions (also
// while the file is open), comparing every read, every extent list and
// every revision with a plain byte slice, and the store's reference
// counts with the layers' records whenever no file is open.
func TestLazyBaseRandomOps(t *testing.T) {
	for _, seed := range []int64{1, 2, 3, 4, 5, 6} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctx := context.Background()
			r, cs, st := earlyRepo(t, 256<<10)
			rng := rand.New(rand.NewSource(seed))
			// Repeated blocks, so chunks dedup within the file.
			blocks := make([][]byte, 4)
			for i := range blocks {
				blocks[i] = make([]byte, 96<<10)
				rng.Read(blocks[i])
			}
			var want []byte
			for len(want) < 3<<20 {
				want = append(want, blocks[rng.Intn(len(blocks))][:rng.Intn(96<<10)+1]...)
				if rng.Intn(4) == 0 {
					p := make([]byte, rng.Intn(64<<10))
					rng.Read(p)
					want = append(want, p...)
				}
			}
			ino := committedFile(t, r, st, want)
			revs := map[string][]byte{}
			revList, err := r.Revisions(ctx, "v")
			if err != nil || len(revList) != 1 {
				t.Fatalf("revisions %v, %v", revList, err)
			}
			revs[revList[0].ID] = bytes.Clone(want)

			write := func(off int64, p []byte) {
				t.Helper()
				if n, err := st.WriteAt(ctx, ino, p, off); err != nil || n != len(p) {
					t.Fatalf("write %d+%d: %d, %v", off, len(p), n, err)
				}
				if end := off + int64(len(p)); end > int64(len(want)) {
					want = append(want, make([]byte, end-int64(len(want)))...)
				}
				copy(want[off:], p)
			}
			check := func(tr *layers.Tree, want []byte, what string) {
				t.Helper()
				got := make([]byte, len(want)+100)
				n, err := tr.ReadAt(ctx, ino, got, 0)
				if err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
					first := -1
					for i := range min(n, len(want)) {
						if got[i] != want[i] {
							first = i
							break
						}
					}
					t.Fatalf("%s: read %d bytes (%v), want %d; first difference at %d", what, n, err, len(want), first)
				}
				// A read at an odd offset and length too, across chunks.
				if len(want) > 0 {
					off := rng.Int63n(int64(len(want)))
					p := make([]byte, rng.Intn(300<<10)+1)
					n, err := tr.ReadAt(ctx, ino, p, off)
					end := min(off+int64(len(p)), int64(len(want)))
					if err != nil || int64(n) != end-off || !bytes.Equal(p[:n], want[off:end]) {
						t.Fatalf("%s: read %d+%d: %d bytes, %v", what, off, len(p), n, err)
					}
				}
				es, err := tr.Extents(ctx, ino, 0, int64(len(want)))
				if err != nil {
					t.Fatalf("%s: extents: %v", what, err)
				}
				pos := int64(0)
				for i, e := range es {
					if e.Off != pos || e.Len <= 0 {
						t.Fatalf("%s: extent %d+%d, want it at %d (%v)", what, e.Off, e.Len, pos, es)
					}
					if i > 0 && es[i-1].Hole == e.Hole {
						t.Fatalf("%s: extents %v and %v of the same kind not merged", what, es[i-1], e)
					}
					if e.Hole && !chunk.IsZero(want[e.Off:e.Off+e.Len]) {
						t.Fatalf("%s: hole %d+%d holds data", what, e.Off, e.Len)
					}
					pos += e.Len
				}
				if pos != int64(len(want)) {
					t.Fatalf("%s: extents end at %d, want %d", what, pos, len(want))
				}
				// A listing from inside the file, as SEEK_DATA asks.
				if len(want) > 0 {
					off := rng.Int63n(int64(len(want)))
					es, err := tr.Extents(ctx, ino, off, int64(len(want)))
					if err != nil || len(es) == 0 || es[0].Off != off {
						t.Fatalf("%s: extents from %d: %v, %v", what, off, es, err)
					}
				}
			}
			for step := range 400 {
				switch op := rng.Intn(60); {
				case op < 25: // small rewrite anywhere
					off := rng.Int63n(int64(len(want)) + 1)
					p := make([]byte, rng.Intn(8<<10)+1)
					rng.Read(p)
					write(off, p)
				case op < 30: // larger rewrite, sometimes with a repeated block
					off := rng.Int63n(int64(len(want)) + 1)
					p := bytes.Clone(blocks[rng.Intn(len(blocks))][:rng.Intn(96<<10)+1])
					if rng.Intn(2) == 0 {
						rng.Read(p)
					}
					write(off, p)
				case op < 32: // zeros over data
					off := rng.Int63n(int64(len(want)) + 1)
					write(off, make([]byte, rng.Intn(200<<10)+1))
				case op < 34: // truncate, shorter or longer
					size := rng.Int63n(int64(len(want))*5/4 + 1)
					if _, err := st.SetAttr(ctx, ino, layers.SetAttr{Size: &size}); err != nil {
						t.Fatal(err)
					}
					if size <= int64(len(want)) {
						want = want[:size]
					} else {
						want = append(want, make([]byte, size-int64(len(want)))...)
					}
				case op < 36: // a write past the end leaves a hole
					write(int64(len(want))+rng.Int63n(300<<10), blocks[0][:rng.Intn(20<<10)+1])
				case op < 37: // appends, as a growing log
					for range rng.Intn(8) + 1 {
						write(int64(len(want)), blocks[rng.Intn(len(blocks))][:rng.Intn(96<<10)+1])
					}
				case op < 39:
					if err := st.FlushFile(ctx, ino, true); err != nil {
						t.Fatal(err)
					}
					checkRefsExact(t, r, cs, fmt.Sprintf("step %d: after a durable flush", step))
				case op < 40:
					if err := st.FlushFile(ctx, ino, false); err != nil {
						t.Fatal(err)
					}
				case op < 43:
					tr := commitV(t, r)
					check(tr, want, fmt.Sprintf("step %d: revision", step))
					list, err := r.Revisions(ctx, "v")
					if err != nil {
						t.Fatal(err)
					}
					revs[list[len(list)-1].ID] = bytes.Clone(want)
					checkRefsExact(t, r, cs, fmt.Sprintf("step %d: after a commit", step))
				case op < 45: // remove a revision, maybe while the file is open
					list, err := r.Revisions(ctx, "v")
					if err != nil {
						t.Fatal(err)
					}
					if len(list) < 2 {
						continue
					}
					id := list[rng.Intn(len(list))].ID
					if err := r.RemoveRevision(ctx, "v", id); err != nil {
						t.Fatalf("step %d: remove revision %s: %v", step, id, err)
					}
					delete(revs, id)
				default:
					check(st.Tree(), want, fmt.Sprintf("step %d: staging", step))
				}
			}
			check(st.Tree(), want, "end: staging")
			tr := commitV(t, r)
			check(tr, want, "end: revision")
			list, err := r.Revisions(ctx, "v")
			if err != nil {
				t.Fatal(err)
			}
			revs[list[len(list)-1].ID] = bytes.Clone(want)
			for _, rev := range list {
				tr, err := r.Snapshot(ctx, "v", rev.ID)
				if err != nil {
					t.Fatal(err)
				}
				check(tr, revs[rev.ID], "end: revision "+rev.ID)
			}
			if len(list) != len(revs) {
				t.Fatalf("%d revisions, want %d", len(list), len(revs))
			}
			checkRefsExact(t, r, cs, "end")
			// Every revision gone but the last: the references left are
			// that revision's.
			for _, rev := range list[:len(list)-1] {
				if err := r.RemoveRevision(ctx, "v", rev.ID); err != nil {
					t.Fatal(err)
				}
			}
			checkRefsExact(t, r, cs, "end: one revision left")
		})
	}
}

// TestLazyBaseRealStore rewrites a file in place over the real store,
// whose Retain finds the base's chunks in its open segment (not yet
// sealed) the first time and in its index after a commit sealed them.
func TestLazyBaseRealStore(t *testing.T) {
	ctx := context.Background()
	r, st := repoOverRealStore(t)
	rng := rand.New(rand.NewSource(8))
	want := make([]byte, 3<<20)
	rng.Read(want)
	a, err := st.Create(ctx, layers.RootIno, "big", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, want, 0); err != nil {
		t.Fatal(err)
	}
	check := func(tr *layers.Tree, what string) {
		t.Helper()
		got := make([]byte, len(want)+1)
		if n, err := tr.ReadAt(ctx, a.Ino, got, 0); err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
			t.Fatalf("%s: read %d bytes, %v; equal %v", what, n, err, bytes.Equal(got[:min(n, len(want))], want))
		}
	}
	for round := range 3 {
		if err := st.FlushFile(ctx, a.Ino, true); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 4096)
		rng.Read(p)
		off := rng.Int63n(int64(len(want) - len(p)))
		if _, err := st.WriteAt(ctx, a.Ino, p, off); err != nil {
			t.Fatalf("round %d: in-place write: %v", round, err)
		}
		copy(want[off:], p)
		check(st.Tree(), fmt.Sprintf("round %d: staging", round))
		if err := st.FlushFile(ctx, a.Ino, true); err != nil {
			t.Fatal(err)
		}
		check(st.Tree(), fmt.Sprintf("round %d: staging, flushed", round))
		if round > 0 {
			check(commitV(t, r), fmt.Sprintf("round %d: revision", round))
		}
	}
}

// TestLazyBaseCrash: a kill -9 while a committed file is open for an
// in-place rewrite, before or after its flush reached the index, leaves
// the base readable and never fewer store references than the records
// name. The references the open file took and a store flush made durable
// leak (counted, named by nothing) until a recount, as chunks stored
// early do: space, not data.
func TestLazyBaseCrash(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		flushed bool // the file's new extent map reached the index
	}{
		{name: "open"},
		{name: "flushed, store not flushed", flushed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCrashEnv(t)
			st := e.newStaging("v")
			base := seeded(11, 2<<20)
			ino := writeFile(t, st, layers.RootIno, "big", base, nil)
			if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
				t.Fatal(err)
			}
			const off = 1<<20 + 17
			p := seeded(12, 4096)
			if _, err := st.WriteAt(ctx, ino, p, off); err != nil {
				t.Fatal(err)
			}
			if tc.flushed {
				if err := layers.FlushNow(ctx, st, ino); err != nil {
					t.Fatal(err)
				}
			}
			e.crash()

			st = e.staging("v")
			got := make([]byte, len(base)+1)
			n, err := st.Tree().ReadAt(ctx, ino, got, 0)
			if err != nil || n != len(base) {
				t.Fatalf("read after the crash: %d bytes, %v", n, err)
			}
			// Each byte is the base's, the write's or, where the store
			// lost the new chunks, a hole's; only the chunks the write
			// touched can have been lost.
			lost := 0
			for i := range n {
				switch {
				case got[i] == base[i]:
				case i >= off && i < off+len(p) && got[i] == p[i-off]:
				case got[i] == 0:
					lost++
				default:
					t.Fatalf("byte %d after the crash: %#x, base %#x", i, got[i], base[i])
				}
			}
			if !tc.flushed && lost > 0 {
				t.Fatalf("%d bytes of the base lost, though no flush replaced it", lost)
			}
			for id, want := range layerRefs(t, e.repo) {
				if have := e.cs.Store.Counts()[id]; have < want {
					t.Fatalf("chunk %s: %d references, the records name it %d times", id.Short(), have, want)
				}
			}
		})
	}
}
