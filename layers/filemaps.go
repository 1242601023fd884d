package layers

import (
	"container/list"
	"sync"
)

// fileMaps keeps the size and extent map of recently read files of one
// revision. A revision never changes, and its files are read in many
// requests each (the kernel's 128 KiB–1 MiB reads, the prefetcher before
// the reader), which would otherwise look up and decode both records
// every time: 14% of the server's CPU in a cold tar of a revision.
type fileMaps struct {
	max int // bound on the entries plus their extents

	mu    sync.Mutex // guards the fields below
	cost  int
	lru   *list.List // of *fileMap, most recent first
	items map[Ino]*list.Element
}

type fileMap struct {
	ino  Ino
	size int64
	es   []extent
}

// fileMapsMax bounds a revision's cache: ~64k extents of 48 bytes, 3 MiB.
const fileMapsMax = 1 << 16

func newFileMaps(max int) *fileMaps {
	return &fileMaps{max: max, lru: list.New(), items: map[Ino]*list.Element{}}
}

func (c *fileMaps) get(ino Ino) (fileMap, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[ino]
	if !ok {
		return fileMap{}, false
	}
	c.lru.MoveToFront(e)
	return *e.Value.(*fileMap), true
}

func (c *fileMaps) add(m fileMap) {
	cost := 1 + len(m.es)
	if cost > c.max/4 {
		return // one huge file would push out everything else
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[m.ino]; ok {
		return
	}
	c.items[m.ino] = c.lru.PushFront(&m)
	c.cost += cost
	for c.cost > c.max {
		e := c.lru.Back()
		old := e.Value.(*fileMap)
		c.lru.Remove(e)
		delete(c.items, old.ino)
		c.cost -= 1 + len(old.es)
	}
}
