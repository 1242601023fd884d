package fs

import (
	"context"
	"sync"

	"github.com/strata-backup/strata/layers"
)

// prefetcher reads small files of a read-only view ahead of the reader:
// when a directory is listed with attributes (READDIRPLUS, as tar, cp -a,
// rsync and find do), its small regular files are queued and read once
// in the background, which leaves their chunks in layers' chunk cache.
// A reader that then opens them one by one (tar is strictly sequential)
// finds the data decrypted instead of waiting for the store each time.
// Best effort: a full queue drops jobs, errors are ignored.
type prefetcher struct {
	tree   *layers.Tree
	jobs   chan prefetchJob
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type prefetchJob struct {
	ino  layers.Ino
	size int64
}

// prefetchMax is the largest file prefetched whole: small files are where
// the per-file store round trip dominates; large ones get 1 MiB kernel
// readahead anyway.
const prefetchMax = 1 << 20

// prefetchQueue bounds queued work (a few directories' worth); the layers
// chunk cache (32 MiB) must hold what is read ahead until it is used.
const prefetchQueue = 512

func newPrefetcher(tree *layers.Tree) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prefetcher{tree: tree, jobs: make(chan prefetchJob, prefetchQueue), cancel: cancel}
	p.wg.Add(1)
	go p.run(ctx)
	return p
}

func (p *prefetcher) run(ctx context.Context) {
	defer p.wg.Done()
	buf := make([]byte, prefetchMax)
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-p.jobs:
			_, _ = p.tree.ReadAt(ctx, j.ino, buf[:j.size], 0)
		}
	}
}

// add queues a file if there is room.
func (p *prefetcher) add(a layers.Attr) {
	if a.Mode&0o170000 != 0o100000 || a.Size == 0 || a.Size > prefetchMax {
		return
	}
	select {
	case p.jobs <- prefetchJob{a.Ino, a.Size}:
	default:
	}
}

// close stops the worker and waits for it.
func (p *prefetcher) close() {
	p.cancel()
	p.wg.Wait()
}
