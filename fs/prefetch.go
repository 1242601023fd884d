package fs

import (
	"context"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// prefetcher reads small files of a read-only view ahead of the reader:
// when a directory is listed with attributes (READDIRPLUS, as tar, cp -a,
// rsync and find do), its small regular files are queued and read once
// in the background, and what is read goes into the kernel's page cache
// (FUSE_NOTIFY_STORE). A reader that then opens them one by one (tar is
// strictly sequential) reads from the page cache: no READ round trip at
// all, where it used to cost one each even with the chunks decrypted in
// layers' cache ahead of it. Best effort: a full queue drops jobs, errors
// are ignored, and a file the kernel no longer knows is read the usual way.
type prefetcher struct {
	tree *layers.Tree
	// store hands a file's whole content to the kernel's page cache.
	store  func(ino layers.Ino, data []byte) fuse.Status
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

// prefetchQueue bounds queued work (a few directories' worth), and so the
// page cache filled ahead of the reader.
const prefetchQueue = 512

// prefetchWorkers read ahead in parallel. With the data going to the page
// cache, tar no longer waits on READ and catches up with a single worker,
// which spends most of its time waiting on cold shard reads. A cold tar of
// the 795 MiB benchmark revision: 14.0-14.9 s with 4 workers in four
// rounds, 15.5-19.0 s with 1, 13.6-19.0 s with 2, 15.6-25.6 s without the
// page cache store (plain disk 11.4-17.1 s in the same rounds).
const prefetchWorkers = 4

// storeRetries and storeRetryWait: the kernel knows the inodes of a
// listing only once the lister has parsed the READDIRPLUS reply, which is
// after the reply leaves us and so after the jobs were queued; an idle
// worker can get there first and find ENOENT.
const (
	storeRetries   = 10
	storeRetryWait = time.Millisecond
)

func newPrefetcher(tree *layers.Tree, store func(ino layers.Ino, data []byte) fuse.Status) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prefetcher{tree: tree, store: store, jobs: make(chan prefetchJob, prefetchQueue), cancel: cancel}
	for range prefetchWorkers {
		p.wg.Add(1)
		go p.run(ctx)
	}
	return p
}

func (p *prefetcher) run(ctx context.Context) {
	defer p.wg.Done()
	// Grown on demand: a browse mount keeps up to browseViews views with
	// prefetchWorkers workers each, most of them idle.
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-p.jobs:
			if int64(cap(buf)) < j.size {
				buf = make([]byte, min(prefetchMax, max(j.size, 2*int64(cap(buf)))))
			}
			n, err := p.tree.ReadOnce(ctx, j.ino, buf[:j.size], 0)
			if err == nil && int64(n) == j.size {
				p.storeRetrying(ctx, j.ino, buf[:n])
			}
		}
	}
}

// storeRetrying stores data, retrying a little while the kernel does not
// know the inode yet (see storeRetries). An inode it has forgotten stays
// unknown: the reader, if any comes, reads it the usual way.
func (p *prefetcher) storeRetrying(ctx context.Context, ino layers.Ino, data []byte) {
	for range storeRetries {
		if p.store(ino, data) != fuse.ENOENT {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(storeRetryWait):
		}
	}
}

// addAll queues the small regular files of a listing batch (nil entries:
// removed meanwhile) while there is room, after loading their extent
// maps in one index walk (LoadFileMaps), so the workers do not look each
// up on their own. That walk runs on the READDIRPLUS request: the lister
// waits for it, but reads those files next anyway, and its own READs of
// files the workers have not reached find the maps cached too. Moved into
// the workers (the first to take a file of the batch walks), a cold tar
// of the benchmark revision took 13.4-15.5 s and 12.4-14.6 s of server
// CPU, against 12.7-14.1 s and 11.4-13.2 s here.
func (p *prefetcher) addAll(ctx context.Context, attrs []*layers.Attr) {
	files := make([]layers.Attr, 0, len(attrs))
	for _, a := range attrs {
		if a != nil && a.Mode&0o170000 == 0o100000 && a.Size > 0 && a.Size <= prefetchMax {
			files = append(files, *a)
		}
	}
	if len(files) == 0 {
		return
	}
	_ = p.tree.LoadFileMaps(ctx, files) // best effort: a worker looks up what is missing
	for _, a := range files {
		select {
		case p.jobs <- prefetchJob{a.Ino, a.Size}:
		default:
			return
		}
	}
}

// close stops the worker and waits for it.
func (p *prefetcher) close() {
	p.cancel()
	p.wg.Wait()
}

// storeCache puts a file's whole content into the kernel's page cache.
// Revisions never change and their files open without OPEN (keep_cache),
// so the pages stay valid until memory pressure takes them. The kernel
// answers ENOENT for an inode it does not know (yet, or any more).
func (f *treeFS) storeCache(ino layers.Ino, data []byte) fuse.Status {
	st := f.srv.InodeNotifyStoreCache(f.node(ino), 0, data)
	if st != fuse.OK && st != fuse.ENOENT {
		f.opts.Logger.Debug("fuse: store in page cache", "ino", ino, "status", st)
	}
	return st
}
