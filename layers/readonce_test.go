package layers_test

import (
	"bytes"
	"context"
	"math/rand"
	"runtime"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
)

// TestReadOnce: ReadOnce (the prefetcher's read) returns what ReadAt
// returns, for whole files, ranges that cut chunks and sparse files, over
// the real store (which decrypts into the caller's buffer) and over a
// store that cannot; whole chunks read that way stay out of the chunk
// cache, and over the real store they cost no chunk-sized allocation.
func TestReadOnce(t *testing.T) {
	ctx := context.Background()
	for _, sc := range []struct {
		name string
		open func(t *testing.T) (*layers.Repo, *layers.Staging)
	}{
		{"real store", func(t *testing.T) (*layers.Repo, *layers.Staging) { return repoOverRealStore(t) }},
		{"memstore", func(t *testing.T) (*layers.Repo, *layers.Staging) { return repoOver(t, memstore.New()) }},
	} {
		t.Run(sc.name, func(t *testing.T) {
			r, st := sc.open(t)
			rng := rand.New(rand.NewSource(7))
			random := func(n int) []byte { p := make([]byte, n); rng.Read(p); return p }
			files := map[string][]byte{
				// Compressible, so the store's decompressing path is
				// the one that writes into the caller's buffer.
				"small": bytes.Repeat(random(1000), 100),
				"big":   random(3 << 20),
				"other": random(200_000),
			}
			sparse := make([]byte, 64<<10+1<<20+64<<10)
			copy(sparse, random(64<<10))
			copy(sparse[64<<10+1<<20:], random(64<<10))
			files["sparse"] = sparse
			inos := map[string]layers.Ino{}
			for name, data := range files {
				a, err := st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				if name == "sparse" {
					if _, err := st.WriteAt(ctx, a.Ino, data[:64<<10], 0); err != nil {
						t.Fatal(err)
					}
					if _, err := st.WriteAt(ctx, a.Ino, data[64<<10+1<<20:], 64<<10+1<<20); err != nil {
						t.Fatal(err)
					}
				} else if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
					t.Fatal(err)
				}
				inos[name] = a.Ino
			}
			tr := commitV(t, r)
			read := func(f func(context.Context, layers.Ino, []byte, int64) (int, error), name string, off, n int) []byte {
				t.Helper()
				p := bytes.Repeat([]byte{0xaa}, n) // holes must come back as zeros
				got, err := f(ctx, inos[name], p, int64(off))
				if err != nil {
					t.Fatalf("read %s [%d, +%d): %v", name, off, n, err)
				}
				return p[:got]
			}

			// Whole chunks: from the store, not cached.
			if got := read(tr.ReadOnce, "small", 0, len(files["small"])); !bytes.Equal(got, files["small"]) {
				t.Fatal("ReadOnce of a one-chunk file returned other bytes than written")
			}
			if n := layers.CachedChunks(r); n != 0 {
				t.Errorf("%d chunks cached after ReadOnce of a whole file, want 0", n)
			}
			read(tr.ReadAt, "other", 0, len(files["other"]))
			if n := layers.CachedChunks(r); n != 1 {
				t.Errorf("%d chunks cached after ReadAt of a one-chunk file, want 1 (the check above would pass for nothing)", n)
			}

			for _, c := range []struct {
				name   string
				off, n int
			}{
				{"small", 0, len(files["small"])},
				{"small", 0, len(files["small"]) + 4096}, // past the end
				{"big", 0, len(files["big"])},
				{"big", 700_000, 1 << 20}, // cuts chunks: read through the cache
				{"big", 3<<20 - 10, 100},
				{"other", 0, len(files["other"])}, // cached: copied from there
				{"sparse", 0, len(sparse)},
				{"sparse", 60 << 10, 8 << 10},
			} {
				want := files[c.name][c.off:min(c.off+c.n, len(files[c.name]))]
				if got := read(tr.ReadOnce, c.name, c.off, c.n); !bytes.Equal(got, want) {
					t.Errorf("ReadOnce %s [%d, +%d): %d bytes, differ from what was written (%d bytes)", c.name, c.off, c.n, len(got), len(want))
				}
				if got := read(tr.ReadAt, c.name, c.off, c.n); !bytes.Equal(got, want) {
					t.Errorf("ReadAt %s [%d, +%d): %d bytes, differ from what was written (%d bytes)", c.name, c.off, c.n, len(got), len(want))
				}
			}

			if sc.name != "real store" {
				return
			}
			// Allocation: reading the 100 KB file 20 times would
			// allocate 2 MB if each read decrypted into a buffer of its
			// own; the sealed copy and the decryption scratch are pooled.
			// The process's other goroutines (badger's, the store's)
			// allocate too, so the least of three tries counts.
			p := make([]byte, len(files["small"]))
			least := ^uint64(0)
			for range 3 {
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for range 20 {
					if _, err := tr.ReadOnce(ctx, inos["small"], p, 0); err != nil {
						t.Fatal(err)
					}
				}
				runtime.ReadMemStats(&after)
				least = min(least, after.TotalAlloc-before.TotalAlloc)
			}
			if least > 20*uint64(len(p))/2 {
				t.Errorf("20 ReadOnce of a %d-byte file allocated %d bytes at least, want under half a copy each", len(p), least)
			}
		})
	}
}
