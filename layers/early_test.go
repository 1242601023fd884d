package layers_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/chunker"
)

// earlyRepo opens a repo whose staging files store their data early after
// every earlyStore spool bytes, with chunks small enough that each early
// store makes several.
func earlyRepo(t *testing.T, earlyStore int64) (*layers.Repo, *memstore.Store, *layers.Staging) {
	t.Helper()
	cs := memstore.New()
	r, st := earlyRepoOver(t, cs, earlyStore)
	return r, cs, st
}

// earlyRepoOver is earlyRepo over the chunk store cs.
func earlyRepoOver(t *testing.T, cs layers.ChunkStore, earlyStore int64) (*layers.Repo, *layers.Staging) {
	t.Helper()
	db := openDB(t, "")
	r, err := layers.Open(context.Background(), db, cs, layers.Options{
		SpoolDir:   t.TempDir(),
		Chunker:    chunker.Params{Min: 8 << 10, Avg: 32 << 10, Max: 128 << 10},
		EarlyStore: earlyStore,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Close()
		_ = db.Close()
	})
	return r, fsVolume(t, r)
}

// TestEarlyStoreRandomOps writes one large file mostly by appending, as
// rsync does, with rewrites below what was stored early, truncates,
// flushes and commits in between, and compares every read, every extent
// list and every revision with a plain byte slice.
func TestEarlyStoreRandomOps(t *testing.T) {
	for _, seed := range []int64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctx := context.Background()
			r, _, st := earlyRepo(t, 256<<10)
			rng := rand.New(rand.NewSource(seed))
			a, err := st.Create(ctx, layers.RootIno, "big", 0o644, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Repeated blocks, so chunks dedup within the file.
			blocks := make([][]byte, 6)
			for i := range blocks {
				blocks[i] = make([]byte, 128<<10)
				rng.Read(blocks[i])
			}
			var want []byte
			write := func(off int64, p []byte) {
				t.Helper()
				if n, err := st.WriteAt(ctx, a.Ino, p, off); err != nil || n != len(p) {
					t.Fatalf("write %d+%d: %d, %v", off, len(p), n, err)
				}
				if end := off + int64(len(p)); end > int64(len(want)) {
					want = append(want, make([]byte, end-int64(len(want)))...)
				}
				copy(want[off:], p)
			}
			check := func(tr *layers.Tree, what string) {
				t.Helper()
				got := make([]byte, len(want)+100)
				n, err := tr.ReadAt(ctx, a.Ino, got, 0)
				if err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
					t.Fatalf("%s: read %d bytes (%v), want %d; equal %v", what, n, err, len(want), bytes.Equal(got[:min(n, len(want))], want[:min(n, len(want))]))
				}
				es, err := tr.Extents(ctx, a.Ino, 0, int64(len(want)))
				if err != nil {
					t.Fatalf("%s: extents: %v", what, err)
				}
				pos := int64(0)
				for _, e := range es {
					if e.Off != pos {
						t.Fatalf("%s: extent at %d, want %d (%v)", what, e.Off, pos, es)
					}
					if e.Hole && !chunk.IsZero(want[e.Off:e.Off+e.Len]) {
						t.Fatalf("%s: hole %d+%d holds data", what, e.Off, e.Len)
					}
					pos += e.Len
				}
				if pos != int64(len(want)) {
					t.Fatalf("%s: extents end at %d, want %d", what, pos, len(want))
				}
			}
			for step := range 300 {
				switch op := rng.Intn(40); {
				case op < 28: // append
					p := bytes.Clone(blocks[rng.Intn(len(blocks))][:rng.Intn(128<<10)+1])
					write(int64(len(want)), p)
				case op < 31: // rewrite anywhere
					if len(want) == 0 {
						continue
					}
					off := rng.Int63n(int64(len(want)))
					p := make([]byte, rng.Intn(20<<10)+1)
					rng.Read(p)
					write(off, p)
				case op < 32: // truncate, shorter or longer
					size := rng.Int63n(int64(len(want))*5/4 + 1)
					if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Size: &size}); err != nil {
						t.Fatal(err)
					}
					if size <= int64(len(want)) {
						want = want[:size]
					} else {
						want = append(want, make([]byte, size-int64(len(want)))...)
					}
				case op < 33: // a write past the end leaves a hole
					write(int64(len(want))+rng.Int63n(300<<10), blocks[0][:1000])
				case op < 34:
					if err := st.FlushFile(ctx, a.Ino, rng.Intn(2) == 0); err != nil {
						t.Fatal(err)
					}
				case op < 35:
					check(commitV(t, r), fmt.Sprintf("step %d: revision", step))
				default:
					check(st.Tree(), fmt.Sprintf("step %d: staging", step))
				}
			}
			check(st.Tree(), "end: staging")
			check(commitV(t, r), "end: revision")
		})
	}
}

// TestEarlyStoreReleases: chunks a file stored early are released when the
// file goes before its flush, and kept, once each, when it is flushed.
func TestEarlyStoreReleases(t *testing.T) {
	ctx := context.Background()
	r, cs, st := earlyRepo(t, 128<<10)
	data := make([]byte, 2<<20)
	rand.New(rand.NewSource(9)).Read(data)
	put := func(name string) layers.Ino {
		a, err := st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := st.WriteAt(ctx, a.Ino, data[off:off+64<<10], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		return a.Ino
	}
	put("gone")
	if chunks, _ := cs.Refs(chunk.KindData); chunks == 0 {
		t.Fatal("nothing stored while writing 2 MiB with EarlyStore at 128 KiB")
	}
	if err := st.Unlink(ctx, layers.RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	if chunks, refs := cs.Refs(chunk.KindData); refs != 0 {
		t.Fatalf("after unlinking the unflushed file: %d chunks with %d references, want none", chunks, refs)
	}
	ino := put("kept")
	if err := st.FlushFile(ctx, ino, true); err != nil {
		t.Fatal(err)
	}
	es, err := st.Tree().Extents(ctx, ino, 0, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	chunks, refs := cs.Refs(chunk.KindData)
	if chunks == 0 || refs != chunks {
		t.Fatalf("after the flush: %d chunks, %d references; want one reference each", chunks, refs)
	}
	if len(es) != 1 || es[0].Hole || es[0].Len != int64(len(data)) {
		t.Fatalf("extents %v, want one data run of %d", es, len(data))
	}
	if _, err := r.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
}
