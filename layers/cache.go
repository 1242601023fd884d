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

func newChunkCache(max int) *chunkCache {
	return newLRU[chunk.ID](max, func(b []byte) int { return len(b) })
}

// getChunk returns a chunk's plaintext; callers must not modify it.
//
// Concurrent calls for one chunk share one fetch: the kernel's readahead
// and the small-file prefetcher often ask for the chunk a reader is
// already fetching, and each fetch would read, decrypt and decompress it
// again, with a buffer of its own for each step. The shared fetch does not
// stop when the caller that started it gives up (a reader interrupted
// mid-read): the others still want the chunk, and each caller waits only
// as long as its own ctx allows.
func (r *Repo) getChunk(ctx context.Context, id chunk.ID) ([]byte, error) {
	if b, ok := r.cache.get(id); ok {
		return b, nil
	}
	fetch := r.fetches.DoChan(string(id[:]), func() (any, error) {
		if b, ok := r.cache.get(id); ok {
			return b, nil // added by the fetch that just ended
		}
		b, err := r.cs.Get(context.WithoutCancel(ctx), id)
		if err != nil {
			return nil, err
		}
		r.cache.add(id, b)
		return b, nil
	})
	select {
	case res := <-fetch:
		if res.Err != nil {
			return nil, fmt.Errorf("read chunk %s: %w", id.Short(), res.Err)
		}
		return res.Val.([]byte), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
