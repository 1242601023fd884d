package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroupSyncCoversEveryCaller(t *testing.T) {
	var written, synced atomic.Int64 // writes done, writes covered by the last sync
	var calls atomic.Int64
	g := newGroupSync(func(context.Context) error {
		calls.Add(1)
		w := written.Load()
		time.Sleep(time.Millisecond)
		synced.Store(w)
		return nil
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				mine := written.Add(1)
				if err := g.Sync(context.Background()); err != nil {
					t.Error(err)
				}
				if synced.Load() < mine {
					t.Errorf("Sync returned before a sync covered write %d", mine)
				}
			}
		}()
	}
	wg.Wait()
	if calls.Load() >= 160 {
		t.Fatalf("%d syncs for 160 requests: nothing coalesced", calls.Load())
	}
}

func TestGroupSyncError(t *testing.T) {
	boom := errors.New("boom")
	fail := true
	g := newGroupSync(func(context.Context) error {
		if fail {
			return boom
		}
		return nil
	})
	if err := g.Sync(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want the sync's error", err)
	}
	fail = false
	if err := g.Sync(context.Background()); err != nil {
		t.Fatalf("Sync after recovery = %v", err)
	}
}
