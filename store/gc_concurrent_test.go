package store

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
)

// TestGCConcurrentWithPuts runs GC in a loop while a writer puts chunks
// from a small pool of contents (so garbage is often deduplicated back to
// life), releases some and flushes; every chunk the writer still holds a
// reference to must read back.
func TestGCConcurrentWithPuts(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	r := rand.New(rand.NewPCG(21, 21))
	contents := make([][]byte, 40)
	for i := range contents {
		contents[i] = randBytes(r, 20_000+r.IntN(100_000))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var gcRuns atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if _, err := s.GC(ctx, GCOptions{MaxUnused: 0.01}); err != nil {
				t.Errorf("GC: %v", err)
				return
			}
			gcRuns.Add(1)
		}
	}()
	refs := map[chunk.ID]int{}
	data := map[chunk.ID][]byte{}
	for i := 0; i < 600 || gcRuns.Load() < 5; i++ {
		c := contents[r.IntN(len(contents))]
		id, _, err := s.Put(ctx, chunk.KindData, c)
		if err != nil {
			t.Fatal(err)
		}
		refs[id]++
		data[id] = c
		if r.IntN(2) == 0 {
			for id, n := range refs {
				if n > 0 {
					if err := s.Release(ctx, []chunk.ID{id}); err != nil {
						t.Fatal(err)
					}
					refs[id]--
					break
				}
			}
		}
		if i%20 == 0 {
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 0 {
			for id, n := range refs {
				if n > 0 {
					got, err := s.Get(ctx, id)
					if err != nil || !bytes.Equal(got, data[id]) {
						t.Fatalf("Get of referenced chunk during GC: %v", err)
					}
				}
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if _, err := s.GC(ctx, GCOptions{MaxUnused: 0.01}); err != nil {
		t.Fatal(err)
	}
	check := func() {
		for id, n := range refs {
			if n == 0 {
				continue
			}
			got, err := s.Get(ctx, id)
			if err != nil || !bytes.Equal(got, data[id]) {
				t.Fatalf("referenced chunk %s after GC: %v", id.Short(), err)
			}
			if r := refsOf(t, s, id); r != int64(n) {
				t.Fatalf("chunk %s refs = %d, want %d", id.Short(), r, n)
			}
		}
	}
	check()
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	check()
	t.Logf("%d GC runs", gcRuns.Load())
}

// TestFlushNotStarved flushes while another goroutine keeps putting: Flush
// waits only for what was put before it, so it returns although the store
// is never idle (a starving Flush would hang the test).
func TestFlushNotStarved(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(4, 4))
		for !stop.Load() {
			if _, _, err := s.Put(ctx, chunk.KindData, randBytes(r, 200_000)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	r := rand.New(rand.NewPCG(5, 5))
	want := map[[32]byte][]byte{}
	for range 5 {
		b := randBytes(r, 50_000)
		id, _, err := s.Put(ctx, chunk.KindData, b)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = b
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
}
