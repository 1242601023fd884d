package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/erasure"
	"github.com/strata-backup/strata/store/index"
	"github.com/strata-backup/strata/store/shard"
)

// RebuildIndex replaces the chunk and segment records of the index with
// what the shards say: every segment found in any shard dir is read
// (reconstructing damaged parts), its trailer decrypted, and its chunks
// indexed with one reference each. Segments that cannot be read are
// skipped and reported in the returned error after the rest is rebuilt.
// progress, if set, gets segments done and total.
func (s *Store) RebuildIndex(ctx context.Context, progress func(done, total int64)) error {
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	if err := s.Flush(ctx); err != nil {
		return err
	}
	// Every chunk comes back with one reference until SetReferences puts
	// the true counts; until then GC must not free anything.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(refsPendingKey, nil) }); err != nil {
		return fmt.Errorf("rebuild index: mark references pending: %w", err)
	}
	found := map[uint64]bool{}
	for i, b := range s.backends {
		err := b.List(ctx, func(info shard.Info) error {
			if id, ok := parseSegName(info.Name); ok {
				found[id] = true
			}
			return nil
		})
		if err != nil {
			s.log.Warn("rebuild index: list shard dir", "shard", i, "err", err)
		}
	}
	ids := make([]uint64, 0, len(found))
	for id := range found {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	for _, p := range []string{index.ChunkPrefix, index.SegmentPrefix} {
		if err := s.db.DropPrefix([]byte(p)); err != nil {
			return fmt.Errorf("rebuild index: clear %q: %w", p, err)
		}
	}
	var failed []error
	seen := map[[32]byte]bool{}
	var next uint64
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.rebuildSegment(ctx, id, seen); err != nil {
			failed = append(failed, err)
			s.log.Error("rebuild index: segment skipped", "segment", segName(id), "err", err)
		}
		next = max(next, id+1)
		if progress != nil {
			progress(int64(i+1), int64(len(ids)))
		}
	}
	s.mu.Lock()
	s.nextSeg = max(s.nextSeg, next)
	next = s.nextSeg
	s.mu.Unlock()
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(index.NextSegmentKey, binary.BigEndian.AppendUint64(nil, next))
	}); err != nil {
		return fmt.Errorf("rebuild index: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("rebuild index: sync: %w", err)
	}
	if err := s.recountStats(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("rebuild index: %d of %d segments unreadable, first: %w", len(failed), len(ids), failed[0])
	}
	return nil
}

func (s *Store) rebuildSegment(ctx context.Context, id uint64, seen map[[32]byte]bool) error {
	var h erasure.Header
	var herr error = fmt.Errorf("segment %016x: no readable shard header", id)
	for _, b := range s.backends {
		buf := make([]byte, erasure.HeaderSize)
		if err := b.GetRange(ctx, segName(id), 0, buf); err != nil {
			continue
		}
		hh, err := erasure.ParseHeader(buf)
		if err == nil && hh.Segment == id && hh.K == s.k && hh.M == s.m {
			h, herr = hh, nil
			break
		}
	}
	if herr != nil {
		return herr
	}
	rec := index.Segment{SegLen: h.SegLen, K: h.K, M: h.M}
	read := func(off int64, n int) ([]byte, error) {
		p := make([]byte, n)
		if err := s.readHealthy(ctx, id, rec, off, p); err == nil {
			return p, nil
		}
		if _, err := s.readVerified(ctx, id, rec, off, p, nil); err != nil {
			return nil, err
		}
		return p, nil
	}
	entries, err := s.parseTrailer(id, h.SegLen, read)
	if err != nil {
		// The healthy read may have returned damaged bytes: retry checked.
		read = func(off int64, n int) ([]byte, error) {
			p := make([]byte, n)
			_, err := s.readVerified(ctx, id, rec, off, p, nil)
			return p, err
		}
		if entries, err = s.parseTrailer(id, h.SegLen, read); err != nil {
			return err
		}
	}
	rec.Chunks = len(entries)
	b := index.NewBatch(s.db)
	defer b.Discard()
	for _, e := range entries {
		if seen[e.id] {
			continue // an older copy (a repack interrupted before cleanup)
		}
		seen[e.id] = true
		c := index.Chunk{Segment: id, Offset: e.off, Length: e.n, Kind: e.kind, Refs: 1}
		if err := b.Set(index.ChunkKey(e.id), c.Marshal()); err != nil {
			return err
		}
	}
	if err := b.Set(index.SegmentKey(id), rec.Marshal()); err != nil {
		return err
	}
	return b.Commit()
}
