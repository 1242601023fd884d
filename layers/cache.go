package layers

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/strata-backup/strata/store/chunk"
)

// chunkCache keeps recently read chunks so that small sequential reads of
// one chunk (FUSE reads 128 KiB at a time) fetch and decrypt it once.
// Chunks are immutable, so entries never go stale.
type chunkCache struct {
	max int

	mu    sync.Mutex // guards the fields below
	size  int
	lru   *list.List // of *cacheEntry, most recent first
	items map[chunk.ID]*list.Element
}

type cacheEntry struct {
	id   chunk.ID
	data []byte
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, lru: list.New(), items: map[chunk.ID]*list.Element{}}
}

func (c *chunkCache) get(id chunk.ID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[id]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cacheEntry).data, true
	}
	return nil, false
}

func (c *chunkCache) add(id chunk.ID, data []byte) {
	if len(data) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[id]; ok {
		return
	}
	c.items[id] = c.lru.PushFront(&cacheEntry{id: id, data: data})
	c.size += len(data)
	for c.size > c.max {
		e := c.lru.Back()
		ce := e.Value.(*cacheEntry)
		c.lru.Remove(e)
		delete(c.items, ce.id)
		c.size -= len(ce.data)
	}
}

// getChunk returns a chunk's plaintext; callers must not modify it.
func (r *Repo) getChunk(ctx context.Context, id chunk.ID) ([]byte, error) {
	if b, ok := r.cache.get(id); ok {
		return b, nil
	}
	b, err := r.cs.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	r.cache.add(id, b)
	return b, nil
}
