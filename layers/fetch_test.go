package layers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

// gatedStore counts the Gets of each chunk and, while gated, holds them
// until release is closed or their ctx ends.
type gatedStore struct {
	*memstore.Store
	gated   atomic.Bool
	release chan struct{}
	mu      sync.Mutex
	gets    map[chunk.ID]int
	started chan struct{} // one token per held Get
}

func (g *gatedStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if g.gated.Load() {
		g.mu.Lock()
		g.gets[id]++
		g.mu.Unlock()
		g.started <- struct{}{}
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Store.Get(ctx, id)
}

// TestConcurrentReadsShareAFetch: readers of one chunk that is being
// fetched wait for that fetch instead of starting their own (the kernel's
// readahead and the prefetcher do this all the time), and when the reader
// doing the fetch gives up, one of the waiting ones takes it over.
// Steps: commit a 100 KB file (one chunk); hold the store's Gets; read it
// from the revision with a cancelable ctx, then from seven more readers;
// cancel the first; let the Gets finish.
// Pass: the first reader gets context.Canceled, the seven get the data,
// and the store saw two Gets of the chunk: the abandoned one and the one
// the seven shared (eight without sharing).
func TestConcurrentReadsShareAFetch(t *testing.T) {
	ctx := context.Background()
	cs := &gatedStore{Store: memstore.New(), release: make(chan struct{}), gets: map[chunk.ID]int{}, started: make(chan struct{}, 64)}
	r, st := repoOver(t, cs)
	a, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 100_000)
	rand.Read(data)
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	tr := commitV(t, r)

	cs.gated.Store(true)
	read := func(ctx context.Context) error {
		buf := make([]byte, len(data))
		n, err := tr.ReadAt(ctx, a.Ino, buf, 0)
		if err != nil {
			return err
		}
		if !bytes.Equal(buf[:n], data) {
			return errors.New("read other bytes than written")
		}
		return nil
	}
	firstCtx, cancel := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { first <- read(firstCtx) }()
	<-cs.started // the first reader's fetch is in the store

	const others = 7
	errs := make(chan error, others)
	for range others {
		go func() { errs <- read(ctx) }()
	}
	// Give the others time to join the fetch. Whether they do or not, the
	// pass condition holds with sharing (one fetch at a time, and late
	// ones find the chunk cached); without it, each that joined would
	// show as a Get of its own.
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled reader: %v, want context.Canceled", err)
	}
	close(cs.release)
	for range others {
		if err := <-errs; err != nil {
			t.Errorf("reader: %v", err)
		}
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for id, n := range cs.gets {
		if n != 2 {
			t.Errorf("chunk %s fetched %d times, want twice (abandoned, then shared)", id.Short(), n)
		}
	}
	if len(cs.gets) == 0 {
		t.Error("no chunk was fetched from the store")
	}
}
