package store

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/index"
)

// refsPendingKey is present while SetReferences is rewriting reference
// counts: until it is gone some counts may still be the ones RebuildIndex
// guessed (one each), so the repair must run again before a GC.
var refsPendingKey = []byte(index.MiscPrefix + "refs-pending")

// RefsReport says what SetReferences found.
type RefsReport struct {
	Chunks       int64 // chunks in the store
	References   int64 // references reported
	Changed      int64 // chunks whose count changed
	Unreferenced int64 // chunks left with no reference: garbage for GC
	Missing      int64 // distinct referenced chunks the store does not have
}

// SetReferences replaces every chunk's reference count with the number of
// times counts yields its id (after RebuildIndex, which can only guess
// one each, with the references the metadata holds: layers' References).
// Chunks nobody references get zero and become garbage for GC; referenced
// chunks the store lacks are counted in Missing and logged.
//
// It must not run concurrently with Put or Release (repair runs with the
// repository otherwise idle). It is crash-safe: counts are absolute, so a
// second run repairs an interrupted one, and raised counts are written
// before lowered ones, so once the raises are in no count is below its
// true value and nothing referenced can be collected. ReferencesPending
// reports an interrupted run.
func (s *Store) SetReferences(ctx context.Context, counts func(yield func(id chunk.ID) error) error) (RefsReport, error) {
	var rep RefsReport
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	if err := s.Flush(ctx); err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}
	want := map[chunk.ID]int64{}
	err := counts(func(id chunk.ID) error {
		want[id]++
		rep.References++
		return ctx.Err()
	})
	if err != nil {
		return rep, fmt.Errorf("set references: count: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(refsPendingKey, nil) }); err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return rep, fmt.Errorf("set references: sync index: %w", err)
	}

	s.idxMu.Lock()
	type change struct {
		id chunk.ID
		c  index.Chunk
	}
	var raise, lower []change
	seen := map[chunk.ID]bool{}
	err = s.db.View(func(txn *badger.Txn) error {
		return index.EachChunk(txn, func(id chunk.ID, c index.Chunk) error {
			seen[id] = true
			rep.Chunks++
			n := want[id]
			if n == 0 {
				rep.Unreferenced++
			}
			switch {
			case n > c.Refs:
				c.Refs = n
				raise = append(raise, change{id, c})
			case n < c.Refs:
				c.Refs = n
				lower = append(lower, change{id, c})
			}
			return nil
		})
	})
	if err == nil {
		for _, part := range [][]change{raise, lower} {
			const per = 1000
			for len(part) > 0 && err == nil {
				batch := part[:min(per, len(part))]
				part = part[len(batch):]
				err = s.db.Update(func(txn *badger.Txn) error {
					for _, ch := range batch {
						if err := txn.Set(index.ChunkKey(ch.id), ch.c.Marshal()); err != nil {
							return err
						}
					}
					return nil
				})
				rep.Changed += int64(len(batch))
			}
		}
	}
	s.idxMu.Unlock()
	if err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}

	// Chunks of the open segment live in memory (and the journal) until
	// sealed; Flush below journals their new counts.
	s.mu.Lock()
	for id, m := range s.mem {
		seen[id] = true
		rep.Chunks++
		n := want[id]
		if n == 0 {
			rep.Unreferenced++
		}
		if m.refs != n {
			m.refs = n
			rep.Changed++
		}
	}
	s.mu.Unlock()
	for id := range want {
		if !seen[id] {
			rep.Missing++
			s.log.Error("set references: referenced chunk missing from the store", "chunk", id.Short(), "references", want[id])
		}
	}
	if err := s.Flush(ctx); err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(refsPendingKey) }); err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return rep, fmt.Errorf("set references: sync index: %w", err)
	}
	if err := s.recountStats(); err != nil {
		return rep, fmt.Errorf("set references: %w", err)
	}
	s.log.Info("reference counts set", "chunks", rep.Chunks, "references", rep.References,
		"changed", rep.Changed, "unreferenced", rep.Unreferenced, "missing", rep.Missing)
	return rep, nil
}

// ReferencesPending reports whether a SetReferences run was interrupted:
// reference counts may be too low until it runs again to completion.
func (s *Store) ReferencesPending(ctx context.Context) (bool, error) {
	pending := false
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(refsPendingKey)
		if err == nil {
			pending = true
			return nil
		}
		if err == badger.ErrKeyNotFound {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read index: %w", err)
	}
	return pending, nil
}
