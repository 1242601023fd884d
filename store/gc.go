package store

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/erasure"
	"github.com/strata-backup/strata/store/index"
)

// GCOptions configure GC.
type GCOptions struct {
	// MaxUnused is the share (0..1) of garbage a segment may hold before
	// its live chunks are copied to a new segment and it is deleted.
	// Zero means 0.05; 1 or more never repacks for garbage (only
	// all-garbage segments are deleted). Independently, segments below
	// 1/8 of the segment size are merged when there are two or more.
	MaxUnused float64
}

// GCStats reports what GC did.
type GCStats struct {
	SegmentsDeleted  int
	SegmentsRepacked int
	ChunksFreed      int
	OrphansDeleted   int
	// BytesFreed is shard bytes deleted minus shard bytes written by
	// repacking.
	BytesFreed int64
	// UnusedLeft is the garbage (sealed chunk bytes, before parity) left
	// in segments kept because it stayed under MaxUnused.
	UnusedLeft int64
}

type gcChunk struct {
	id   chunk.ID
	loc  index.Chunk
	live bool
}

// GC frees chunks without references: it deletes segments holding only
// garbage, repacks segments whose garbage share exceeds MaxUnused, and
// deletes orphaned shards. Every step is crash-safe: new segments and their
// index entries are durable before old index entries go, and index entries
// go before shard files.
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCStats, error) {
	if pending, err := s.ReferencesPending(ctx); err != nil || pending {
		if err == nil {
			err = ErrReferencesPending
		}
		return GCStats{}, err
	}
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	var st GCStats
	maxUnused := opts.MaxUnused
	if maxUnused == 0 {
		maxUnused = 0.05
	}
	if err := s.Flush(ctx); err != nil {
		return st, err
	}
	segs, err := s.indexedSegments()
	if err != nil {
		return st, err
	}
	bySeg := map[uint64][]gcChunk{}
	err = s.db.View(func(txn *badger.Txn) error {
		return index.EachChunk(txn, func(id chunk.ID, c index.Chunk) error {
			bySeg[c.Segment] = append(bySeg[c.Segment], gcChunk{id: id, loc: c, live: c.Refs > 0})
			return nil
		})
	})
	if err != nil {
		return st, fmt.Errorf("gc: scan index: %w", err)
	}

	var repack *segBuf
	defer func() {
		if repack != nil { // not sealed: GC failed or was cancelled
			repack.data.close()
		}
	}()
	// Segments go as soon as nothing needs them: all-garbage ones before
	// any repacking, repacked ones once the segment holding their live
	// chunks is durable. On a nearly full disk the space they free is
	// what the repacking writes into (prune is how a user frees space).
	drop := func(sgs []segEntry, repacked bool) error {
		for _, sg := range sgs {
			freed, chunks, err := s.deleteSegment(ctx, sg, bySeg[sg.id])
			if err != nil {
				return err
			}
			if freed > 0 {
				st.BytesFreed += freed
				st.ChunksFreed += chunks
				if repacked {
					st.SegmentsRepacked++
				} else {
					st.SegmentsDeleted++
				}
			}
		}
		return nil
	}
	var copied []segEntry // live chunks all in repack, sealed or not
	flushRepack := func() error {
		if repack == nil || len(repack.chunks) == 0 {
			return nil
		}
		full := s.buildFull(repack)
		if err := s.sealSegment(ctx, repack); err != nil {
			return fmt.Errorf("gc: write repacked segment: %w", err)
		}
		st.BytesFreed -= int64(s.k+s.m) * erasure.FileSize(erasure.ShardLen(full, s.k))
		repack = nil
		done := copied
		copied = nil
		return drop(done, true)
	}
	// Small segments (each process that flushes and exits leaves one)
	// cost K+M files each: merge them when there are several.
	smallLimit := int64(s.cfg.SegmentSize / 8)
	small := 0
	for _, sg := range segs {
		if sg.rec.SegLen < smallLimit {
			small++
		}
	}
	var garbage, candidates []segEntry
	for _, sg := range segs {
		var live, dead int64
		for _, c := range bySeg[sg.id] {
			if c.live {
				live += int64(c.loc.Length)
			} else {
				dead += int64(c.loc.Length)
			}
		}
		switch {
		case live == 0:
			garbage = append(garbage, sg)
		case maxUnused < 1 && float64(dead) > maxUnused*float64(live+dead),
			small >= 2 && sg.rec.SegLen < smallLimit:
			candidates = append(candidates, sg)
		default:
			st.UnusedLeft += dead
		}
	}
	if err := drop(garbage, false); err != nil {
		return st, err
	}
	for _, sg := range candidates {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		readable := true
		for _, c := range bySeg[sg.id] {
			if !c.live {
				continue
			}
			sealed := make([]byte, c.loc.Length)
			if _, err := s.readChunkSealed(ctx, c.id, c.loc, sg.rec, sealed); err != nil {
				// Keep the segment: scrub reports it, and the chunks
				// already copied are simply duplicates.
				s.log.Error("gc: segment not repacked, a live chunk is unreadable", "segment", segName(sg.id), "err", err)
				readable = false
				break
			}
			if repack == nil {
				s.mu.Lock()
				repack = s.newSegLocked(0)
				s.mu.Unlock()
				repack.repack = true
			}
			repack.chunks = append(repack.chunks, segChunk{id: c.id, kind: c.loc.Kind, off: uint32(repack.data.len), n: c.loc.Length})
			repack.data.append(sealed)
			if repack.data.len >= int64(s.cfg.SegmentSize) || len(repack.chunks) >= maxSegChunks {
				if err := flushRepack(); err != nil {
					return st, err
				}
			}
		}
		if readable {
			copied = append(copied, sg)
		}
	}
	if err := flushRepack(); err != nil {
		return st, err
	}
	// Sources whose last chunk filled a repacked segment that flushRepack
	// sealed before they were counted as copied.
	if err := drop(copied, true); err != nil {
		return st, err
	}
	orphans, err := s.orphans(ctx)
	if err != nil {
		return st, err
	}
	if orphans.suspect() {
		return st, fmt.Errorf("gc: %d segments on the shard dirs are missing from the index (%d indexed), more than an interrupted write leaves; the index looks lost or damaged, so nothing was deleted: run 'strata repair --rebuild-index'",
			len(orphans.ids), orphans.indexed)
	}
	for _, id := range orphans.ids {
		for i, b := range s.backends {
			if err := b.Delete(ctx, segName(id)); err != nil {
				return st, fmt.Errorf("gc: delete orphan shard %d of segment %016x: %w", i, id, err)
			}
		}
		st.OrphansDeleted++
	}
	return st, nil
}

// readChunkSealed reads a chunk's sealed bytes and checks that they
// authenticate, reconstructing if needed, so repacking never copies damage.
func (s *Store) readChunkSealed(ctx context.Context, id chunk.ID, loc index.Chunk, seg index.Segment, sealed []byte) ([]byte, error) {
	if err := s.readHealthy(ctx, loc.Segment, seg, int64(loc.Offset), sealed); err == nil {
		if _, err := s.keys.Open(nil, sealed, id); err == nil {
			return sealed, nil
		}
	}
	bad, err := s.readVerified(ctx, loc.Segment, seg, int64(loc.Offset), sealed, nil)
	if err != nil {
		return nil, err
	}
	if _, err := s.keys.Open(nil, sealed, id); err != nil {
		return nil, &DamageError{Segment: loc.Segment, Chunk: id, Bad: bad, K: seg.K, M: seg.M, Err: err}
	}
	return sealed, nil
}

// deleteSegment removes a segment's remaining chunk entries and its record,
// then its shards. It keeps the segment if one of its garbage chunks got a
// new reference meanwhile (a Put that deduplicated against it), returning
// zero freed bytes.
func (s *Store) deleteSegment(ctx context.Context, sg segEntry, chunks []gcChunk) (int64, int, error) {
	s.idxMu.Lock()
	s.mu.Lock()
	freed := 0
	err := func() error {
		b := s.db.NewTransaction(true) // atomic: at most maxSegChunks keys
		defer b.Discard()
		var del [][]byte
		for _, c := range chunks {
			cur, found, err := index.GetChunk(b, c.id)
			if err != nil {
				return err
			}
			if !found || cur.Segment != sg.id {
				continue // moved by repack
			}
			if cur.Refs > 0 || s.deltas[c.id] > 0 {
				return errResurrected
			}
			del = append(del, index.ChunkKey(c.id))
		}
		for _, k := range del {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if err := b.Delete(index.SegmentKey(sg.id)); err != nil {
			return err
		}
		if s.lost[sg.id] {
			if err := b.Delete(lostKey(sg.id)); err != nil {
				return err
			}
		}
		freed = len(del)
		return b.Commit()
	}()
	if err == nil {
		delete(s.lost, sg.id)
		s.stats.Chunks -= int64(freed)
		s.stats.Segments--
		s.stats.SegmentBytes -= sg.rec.SegLen
		s.stats.ShardBytes -= int64(sg.rec.K+sg.rec.M) * erasure.FileSize(erasure.ShardLen(sg.rec.SegLen, sg.rec.K))
	}
	s.mu.Unlock()
	s.idxMu.Unlock()
	if err == errResurrected {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("gc: delete segment %016x from index: %w", sg.id, err)
	}
	if err := s.db.Sync(); err != nil {
		return 0, 0, fmt.Errorf("gc: sync index: %w", err)
	}
	for i, b := range s.backends {
		if err := b.Delete(ctx, segName(sg.id)); err != nil {
			// The index no longer names it: a later GC collects it as
			// an orphan.
			s.log.Warn("gc: delete shard", "segment", segName(sg.id), "shard", i, "err", err)
		}
	}
	return int64(sg.rec.K+sg.rec.M) * erasure.FileSize(erasure.ShardLen(sg.rec.SegLen, sg.rec.K)), freed, nil
}

var errResurrected = fmt.Errorf("garbage chunk referenced again")

// Walk calls fn with the id and plaintext of every stored chunk of kind,
// in no particular order (layers uses it to find its records when the
// index is rebuilt). An error from fn stops the walk.
func (s *Store) Walk(ctx context.Context, kind chunk.Kind, fn func(id chunk.ID, data []byte) error) error {
	var ids []chunk.ID
	s.mu.Lock()
	for id, m := range s.mem {
		if m.kind == kind {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	err := s.db.View(func(txn *badger.Txn) error {
		return index.EachChunk(txn, func(id chunk.ID, c index.Chunk) error {
			if c.Kind == kind {
				ids = append(ids, id)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := s.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		if err := fn(id, data); err != nil {
			return err
		}
	}
	return nil
}
