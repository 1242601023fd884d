package fs

import "sync"

// handles maps FUSE file handle numbers to per-open state (directory
// cursors). Handle 0 is never issued.
type handles[T any] struct {
	mu   sync.Mutex // guards next and m
	next uint64
	m    map[uint64]T
}

func (h *handles[T]) add(v T) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[uint64]T)
	}
	h.next++
	h.m[h.next] = v
	return h.next
}

func (h *handles[T]) get(fh uint64) (T, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.m[fh]
	return v, ok
}

func (h *handles[T]) remove(fh uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, fh)
}

// each calls fn for every open handle, under the table's lock: fn must
// not call back into h.
func (h *handles[T]) each(fn func(T)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.m {
		fn(v)
	}
}
