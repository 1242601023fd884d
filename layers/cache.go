package layers

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/strata-backup/strata/store/chunk"
)

// lru keeps the values most recently used, up to a total cost; values
// never change once added (chunks, a revision's file maps), so entries
// never go stale.
type lru[K comparable, V any] struct {
	max  int
	cost func(V) int

	mu    sync.Mutex // guards the fields below
	size  int
	order *list.List // of *lruEntry, most recent first
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int, cost func(V) int) *lru[K, V] {
	return &lru[K, V]{max: max, cost: cost, order: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// add keeps v unless it alone would take over a quarter of the cache
// (it would push out everything else).
func (c *lru[K, V]) add(k K, v V) {
	cost := c.cost(v)
	if cost > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v})
	c.size += cost
	for c.size > c.max {
		e := c.order.Back()
		old := e.Value.(*lruEntry[K, V])
		c.order.Remove(e)
		delete(c.items, old.key)
		c.size -= c.cost(old.val)
	}
}

// chunkCache keeps recently read chunks so that small sequential reads of
// one chunk (FUSE reads 128 KiB at a time) fetch and decrypt it once.
type chunkCache = lru[chunk.ID, []byte]

// chunkCacheSize is the chunk cache's budget. A chunk is kept only if it
// takes at most a quarter of it (lru.add), so 16 MiB keeps chunks up to
// 4 MiB, which most of a large file's chunks are (1-2 MiB average, 8 MiB
// max). Measured reading a 512 MiB file cold through a revision mount:
// 0.96-1.00 s with 32 MiB, 1.03-1.05 s with 16 MiB, 1.08-1.14 s with
// 8 MiB; small files no longer need the cache (the prefetcher hands them
// to the kernel's page cache), and NBD's random 4 KiB reads rarely hit it.
const chunkCacheSize = 16 << 20

func newChunkCache(max int) *chunkCache {
	return newLRU[chunk.ID](max, func(b []byte) int { return len(b) })
}

// getChunk returns a chunk's plaintext; callers must not modify it.
//
// Concurrent calls for one chunk share one fetch: the kernel's readahead
// and the small-file prefetcher often ask for the chunk a reader is
// already fetching, and each fetch would read, decrypt and decompress it
// again, with a buffer of its own for each step. The first caller fetches
// in its own goroutine (a goroutine per fetch would add a thread wakeup
// to every random block read) and with its own ctx; the others wait as
// long as their ctx allows, and if the fetcher gave up (its ctx ended,
// not the store failing) they fetch again themselves.
func (r *Repo) getChunk(ctx context.Context, id chunk.ID) ([]byte, error) {
	for {
		if b, ok := r.cache.get(id); ok {
			return b, nil
		}
		f, leader := r.fetches.join(id)
		if leader {
			// A fetch that ended between the cache miss above and the
			// join filled the cache before it left: without this look,
			// each reader that came in that gap fetched again.
			if b, ok := r.cache.get(id); ok {
				f.data = b
				r.fetches.leave(id, f)
				return b, nil
			}
			f.data, f.err = r.cs.Get(ctx, id)
			if f.err == nil {
				r.cache.add(id, f.data)
			}
			f.gaveUp = f.err != nil && ctx.Err() != nil
			r.fetches.leave(id, f)
		} else {
			if err := f.wait(ctx); err != nil {
				return nil, err
			}
			if f.gaveUp && ctx.Err() == nil {
				continue
			}
		}
		if f.err != nil {
			return nil, fmt.Errorf("read chunk %s: %w", id.Short(), f.err)
		}
		return f.data, nil
	}
}

// chunkGetterInto is a ChunkStore that can decrypt a chunk into the
// caller's buffer (store.Store can).
type chunkGetterInto interface {
	GetInto(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error)
}

// readChunkOnce fills dst, as long as chunk id, with the chunk's plaintext
// for a reader that keeps the bytes itself (ReadOnce). A cached copy or a
// fetch under way is used; otherwise the store decrypts into dst and
// nothing is cached.
func (r *Repo) readChunkOnce(ctx context.Context, id chunk.ID, dst []byte) error {
	data, ok := r.cache.get(id)
	if !ok {
		if f := r.fetches.find(id); f != nil {
			if err := f.wait(ctx); err != nil {
				return err
			}
			data, ok = f.data, f.err == nil
		}
	}
	if !ok {
		if gi, into := r.cs.(chunkGetterInto); into && len(dst) > 0 {
			// Capped at dst, so a chunk longer than its extent cannot
			// spill into the caller's buffer beyond it.
			out, err := gi.GetInto(ctx, id, dst[:0:len(dst)])
			if err != nil {
				return fmt.Errorf("read chunk %s: %w", id.Short(), err)
			}
			if len(out) == len(dst) && &out[0] == &dst[0] {
				return nil
			}
			data = out
		} else {
			var err error
			if data, err = r.cs.Get(ctx, id); err != nil {
				return fmt.Errorf("read chunk %s: %w", id.Short(), err)
			}
		}
	}
	if len(data) != len(dst) {
		return fmt.Errorf("chunk %s: length %d, extent says %d", id.Short(), len(data), len(dst))
	}
	copy(dst, data)
	return nil
}

// fetches are the chunk fetches under way, for getChunk.
type fetches struct {
	mu sync.Mutex
	m  map[chunk.ID]*fetch
}

// fetch is one fetch of a chunk; data, err and gaveUp are set before
// done is closed.
type fetch struct {
	done   chan struct{}
	data   []byte
	err    error
	gaveUp bool // failed because the fetcher's ctx ended
}

// wait waits for the fetch to end, or for ctx.
func (f *fetch) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// join returns the fetch of id under way, or starts one that the caller
// (leader) must end with leave.
func (fs *fetches) join(id chunk.ID) (f *fetch, leader bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f, ok := fs.m[id]; ok {
		return f, false
	}
	if fs.m == nil {
		fs.m = make(map[chunk.ID]*fetch)
	}
	f = &fetch{done: make(chan struct{})}
	fs.m[id] = f
	return f, true
}

// find returns the fetch of id under way, if any, without starting one.
func (fs *fetches) find(id chunk.ID) *fetch {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.m[id]
}

func (fs *fetches) leave(id chunk.ID, f *fetch) {
	fs.mu.Lock()
	delete(fs.m, id)
	fs.mu.Unlock()
	close(f.done)
}
