package shardtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/strata-backup/strata/store/shard"
)

// Run checks that backends made by newBackend keep the shard.Backend
// contract. Each subtest gets a fresh, empty backend.
func Run(t *testing.T, newBackend func(t *testing.T) shard.Backend) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}

	t.Run("PutGet", func(t *testing.T) {
		b := newBackend(t)
		if err := b.Put(ctx, "a", data); err != nil {
			t.Fatal(err)
		}
		for _, r := range [][2]int{{0, len(data)}, {0, 1}, {1000, 5000}, {len(data) - 7, 7}, {len(data), 0}} {
			p := make([]byte, r[1])
			if err := b.GetRange(ctx, "a", int64(r[0]), p); err != nil {
				t.Fatalf("GetRange(%d, %d): %v", r[0], r[1], err)
			}
			if !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("GetRange(%d, %d): wrong bytes", r[0], r[1])
			}
		}
	})
	t.Run("Overwrite", func(t *testing.T) {
		b := newBackend(t)
		if err := b.Put(ctx, "a", data[:10]); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, "a", data[10:15]); err != nil {
			t.Fatal(err)
		}
		info, err := b.Stat(ctx, "a")
		if err != nil || info.Size != 5 || info.Name != "a" {
			t.Fatalf("Stat = %+v, %v; want size 5", info, err)
		}
	})
	t.Run("ShortRead", func(t *testing.T) {
		b := newBackend(t)
		if err := b.Put(ctx, "a", data[:100]); err != nil {
			t.Fatal(err)
		}
		err := b.GetRange(ctx, "a", 90, make([]byte, 20))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("GetRange past end = %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		b := newBackend(t)
		if err := b.GetRange(ctx, "nope", 0, make([]byte, 1)); !errors.Is(err, shard.ErrNotFound) {
			t.Fatalf("GetRange missing = %v, want ErrNotFound", err)
		}
		if _, err := b.Stat(ctx, "nope"); !errors.Is(err, shard.ErrNotFound) {
			t.Fatalf("Stat missing = %v, want ErrNotFound", err)
		}
		if err := b.Delete(ctx, "nope"); err != nil {
			t.Fatalf("Delete missing = %v, want nil", err)
		}
	})
	t.Run("ListDelete", func(t *testing.T) {
		b := newBackend(t)
		want := []string{"x1", "x2", "x3"}
		for i, n := range want {
			if err := b.Put(ctx, n, data[:i+1]); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Delete(ctx, "x2"); err != nil {
			t.Fatal(err)
		}
		got := list(t, b)
		if len(got) != 2 || got[0].Name != "x1" || got[0].Size != 1 || got[1].Name != "x3" || got[1].Size != 3 {
			t.Fatalf("List = %+v, want x1 (1 byte), x3 (3 bytes)", got)
		}
		stop := errors.New("stop")
		if err := b.List(ctx, func(shard.Info) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("List with failing callback = %v, want its error", err)
		}
	})
	t.Run("BadNames", func(t *testing.T) {
		b := newBackend(t)
		for _, n := range []string{"", "a/b", "../x", ".hidden"} {
			if err := b.Put(ctx, n, data[:1]); err == nil {
				t.Errorf("Put(%q) succeeded", n)
			}
		}
	})
	t.Run("Batch", func(t *testing.T) {
		b := newBackend(t)
		bb, ok := b.(shard.Batcher)
		if !ok {
			t.Log("backend is not a shard.Batcher")
			return
		}
		// In parts (an empty one too), stored back to back.
		if err := bb.PutBatch(ctx, "a", data[:20], data[20:20], data[20:50]); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 50)
		if err := b.GetRange(ctx, "a", 0, p); err != nil || !bytes.Equal(p, data[:50]) {
			t.Fatalf("GetRange after PutBatch: %v", err)
		}
		if err := bb.SyncBatch(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		b := newBackend(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := string(rune('a' + i))
				if err := b.Put(ctx, name, data[i:i+1000]); err != nil {
					errs <- err
					return
				}
				p := make([]byte, 1000)
				if err := b.GetRange(ctx, name, 0, p); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, data[i:i+1000]) {
					errs <- errors.New("concurrent read returned wrong bytes")
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := list(t, b); len(got) != 8 {
			t.Fatalf("List after concurrent puts: %d objects, want 8", len(got))
		}
	})

	t.Run("Stage", func(t *testing.T) {
		b := newBackend(t)
		st, ok := b.(shard.Stager)
		if !ok {
			t.Log("backend does not implement shard.Stager")
			return
		}
		if err := b.Put(ctx, "s", data[:10]); err != nil {
			t.Fatal(err)
		}
		p, err := st.Stage(ctx, "s", data[:1000], data[1000:])
		if err != nil {
			t.Fatal(err)
		}
		// Readable, whole, under its name before Sync.
		got := make([]byte, len(data))
		if err := b.GetRange(ctx, "s", 0, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("staged object before Sync: %v", err)
		}
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		if bt, ok := b.(shard.Batcher); ok {
			if err := bt.SyncBatch(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if infos := list(t, b); len(infos) != 1 || infos[0].Size != int64(len(data)) {
			t.Fatalf("after Stage and Sync: %+v", infos)
		}
		clear(got)
		if err := b.GetRange(ctx, "s", 0, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("staged object after Sync: %v", err)
		}
		p, err = st.Stage(ctx, "t", data[:100])
		if err != nil {
			t.Fatal(err)
		}
		p.Abort()
	})
}

func list(t *testing.T, b shard.Backend) []shard.Info {
	t.Helper()
	var got []shard.Info
	if err := b.List(context.Background(), func(i shard.Info) error {
		got = append(got, i)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
	return got
}
