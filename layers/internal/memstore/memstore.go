// Package memstore is an in-memory chunk store for layers' tests: it
// counts references the way the real store does, so tests can check that
// layers releases exactly what it put.
package memstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/strata-backup/strata/store/chunk"
)

// ErrNotFound is returned by Get for an unknown or fully released chunk.
var ErrNotFound = errors.New("chunk not found")

// Store keeps chunks in memory with reference counts.
type Store struct {
	mu     sync.Mutex // guards the fields below
	data   map[chunk.ID][]byte
	refs   map[chunk.ID]int
	kinds  map[chunk.ID]chunk.Kind
	puts   int
	bytes  int64 // bytes added (new chunks only)
	Strict bool  // reject Puts of all-zero data chunks (holes must never be stored)
}

// New returns an empty store that rejects all-zero Puts.
func New() *Store {
	return &Store{data: map[chunk.ID][]byte{}, refs: map[chunk.ID]int{}, kinds: map[chunk.ID]chunk.Kind{}, Strict: true}
}

// Put stores a copy of data and adds a reference.
func (s *Store) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	if s.Strict && kind == chunk.KindData && chunk.IsZero(data) {
		return chunk.ID{}, false, fmt.Errorf("put of all-zero data (a hole)")
	}
	id := chunk.ID(sha256.Sum256(data))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	s.refs[id]++
	if _, ok := s.data[id]; ok {
		return id, false, nil
	}
	s.data[id] = append([]byte(nil), data...)
	s.kinds[id] = kind
	s.bytes += int64(len(data))
	return id, true, nil
}

// Get returns a chunk's data.
func (s *Store) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[id]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", id.Short(), ErrNotFound)
	}
	return b, nil
}

// Has reports whether a chunk is stored.
func (s *Store) Has(ctx context.Context, id chunk.ID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.data[id]
	return ok, nil
}

// Release drops one reference per occurrence; a chunk at zero is deleted.
func (s *Store) Release(ctx context.Context, ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.refs[id] <= 0 {
			return fmt.Errorf("release %s: no references", id.Short())
		}
		s.refs[id]--
		if s.refs[id] == 0 {
			delete(s.refs, id)
			delete(s.data, id)
			delete(s.kinds, id)
		}
	}
	return nil
}

// Retain adds a reference per occurrence; every id must be stored, or
// nothing changes.
func (s *Store) Retain(ctx context.Context, ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.refs[id] <= 0 {
			return fmt.Errorf("retain %s: %w", id.Short(), ErrNotFound)
		}
	}
	for _, id := range ids {
		s.refs[id]++
	}
	return nil
}

// Flush does nothing: memory is as durable as it gets.
func (s *Store) Flush(ctx context.Context) error { return nil }

// Walk calls fn for every chunk of kind.
func (s *Store) Walk(ctx context.Context, kind chunk.Kind, fn func(id chunk.ID, data []byte) error) error {
	s.mu.Lock()
	var ids []chunk.ID
	for id, k := range s.kinds {
		if k == kind {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		b, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		if err := fn(id, b); err != nil {
			return err
		}
	}
	return nil
}

// Refs returns the total reference count per kind.
func (s *Store) Refs(kind chunk.Kind) (chunks, refs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.refs {
		if s.kinds[id] == kind {
			chunks++
			refs += n
		}
	}
	return chunks, refs
}

// Counts returns every chunk's reference count.
func (s *Store) Counts() map[chunk.ID]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[chunk.ID]int, len(s.refs))
	for id, n := range s.refs {
		out[id] = n
	}
	return out
}

// Added returns the bytes of new chunks stored so far.
func (s *Store) Added() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
