package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sync/errgroup"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/erasure"
	"github.com/strata-backup/strata/store/index"
)

// Get returns the plaintext of chunk id: ErrNotFound if there is none, a
// *DamageError if more shards of its segment are bad than parity covers.
// A healthy read takes the sealed bytes straight from the data shard(s);
// if that fails or does not authenticate, the covering blocks of every
// shard are read, checked and the damaged ones reconstructed.
func (s *Store) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	return s.GetInto(ctx, id, nil)
}

// GetInto is Get appending the plaintext to dst, which saves an
// allocation (and its zeroing) per chunk for a reader that keeps the
// bytes elsewhere: layers' read-once path, which hands small files to the
// kernel's page cache.
func (s *Store) GetInto(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	plain, err := s.get(ctx, id, dst)
	var de *DamageError
	if err != nil && s.describe != nil && errors.As(err, &de) && !de.Chunk.IsZero() && de.What == "" {
		de.What = s.describe(de.Chunk)
	}
	return plain, err
}

func (s *Store) get(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if m, ok := s.mem[id]; ok {
		if m.plain != nil {
			p := append(dst, m.plain...)
			s.mu.Unlock()
			return p, nil
		}
		if m.seg.data == nil {
			// Its segment's shard files are written, its bytes
			// freed, the index not yet committed: read the files.
			loc := index.Chunk{Segment: m.seg.id, Offset: uint32(m.off), Length: uint32(m.n)}
			seg := index.Segment{SegLen: m.seg.segLen, K: s.k, M: s.m}
			s.mu.Unlock()
			plain, err := s.readChunk(ctx, id, loc, seg, dst)
			if err == nil {
				return plain, nil
			}
			// Committed and collected since? Try the index.
			if _, _, lerr := s.locate(id); lerr != nil {
				return nil, err
			}
			return s.getIndexed(ctx, id, dst)
		}
		// Read under the lock: the segment's bytes are freed once
		// its shard files hold them.
		sealed := s.chunkBuf(m.n)[:m.n]
		err := m.seg.data.readAt(sealed, int64(m.off))
		s.mu.Unlock()
		defer s.putChunkBuf(sealed)
		if err != nil {
			return nil, fmt.Errorf("get chunk %s: %w", id.Short(), err)
		}
		return s.keys.Open(dst, sealed, id)
	}
	s.mu.Unlock()
	return s.getIndexed(ctx, id, dst)
}

func (s *Store) getIndexed(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		loc, seg, err := s.locate(id)
		if err != nil {
			return nil, err
		}
		plain, err := s.readChunk(ctx, id, loc, seg, dst)
		if err == nil || attempt > 0 {
			s.noteLost(loc.Segment, err)
			return plain, err
		}
		// GC may have moved the chunk between locate and read.
		if again, _, lerr := s.locate(id); lerr != nil || again == loc {
			s.noteLost(loc.Segment, err)
			return nil, err
		}
	}
}

// Has reports whether a chunk with id is stored.
func (s *Store) Has(ctx context.Context, id chunk.ID) (bool, error) {
	s.mu.Lock()
	_, ok := s.mem[id]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	_, _, err := s.locate(id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Store) locate(id chunk.ID) (index.Chunk, index.Segment, error) {
	var c index.Chunk
	var seg index.Segment
	err := s.db.View(func(txn *badger.Txn) error {
		var found bool
		var err error
		if c, found, err = index.GetChunk(txn, id); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("chunk %s: %w", id.Short(), ErrNotFound)
		}
		if seg, found, err = index.GetSegment(txn, c.Segment); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("chunk %s: segment %016x not in index: %w", id.Short(), c.Segment, ErrNotFound)
		}
		return nil
	})
	return c, seg, err
}

// readChunk appends the plaintext of chunk id, at loc, to dst.
func (s *Store) readChunk(ctx context.Context, id chunk.ID, loc index.Chunk, seg index.Segment, dst []byte) ([]byte, error) {
	// The sealed bytes never leave this function: reuse their buffer.
	sealed := s.chunkBuf(int(loc.Length))[:loc.Length]
	defer s.putChunkBuf(sealed)
	err := s.readHealthy(ctx, loc.Segment, seg, int64(loc.Offset), sealed)
	if err == nil {
		plain, oerr := s.keys.Open(dst, sealed, id)
		if oerr == nil {
			return plain, nil
		}
		err = oerr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	bad, verr := s.readVerified(ctx, loc.Segment, seg, int64(loc.Offset), sealed, nil)
	if verr != nil {
		var de *DamageError
		if errors.As(verr, &de) {
			de.Chunk = id
		}
		return nil, verr
	}
	plain, oerr := s.keys.Open(dst, sealed, id)
	if oerr == nil {
		s.noteDamage(loc.Segment, bad, err)
		return plain, nil
	}
	// Every block checked, yet the chunk does not authenticate: a data
	// shard was altered along with its checksums. Rebuild the range
	// without each data shard it covers in turn.
	for _, d := range dataShards(seg, int64(loc.Offset), int64(loc.Length)) {
		if seg.M == 0 {
			break
		}
		bad2, verr := s.readVerified(ctx, loc.Segment, seg, int64(loc.Offset), sealed, map[int]bool{d: true})
		if verr != nil {
			continue
		}
		if plain, err2 := s.keys.Open(dst, sealed, id); err2 == nil {
			s.noteDamage(loc.Segment, append(bad2, d), oerr)
			return plain, nil
		}
	}
	return nil, &DamageError{Segment: loc.Segment, Chunk: id, Bad: bad, K: seg.K, M: seg.M, Err: oerr}
}

// dataShards lists the data shards holding segment bytes [off, off+n).
func dataShards(seg index.Segment, off, n int64) []int {
	L := erasure.ShardLen(seg.SegLen, seg.K)
	var out []int
	for i := off / L; i <= (off+n-1)/L && i < int64(seg.K); i++ {
		out = append(out, int(i))
	}
	return out
}

// noteDamage logs a segment that needed reconstruction, once per segment.
func (s *Store) noteDamage(seg uint64, bad []int, cause error) {
	s.mu.Lock()
	s.stats.DegradedReads++
	first := !s.damaged[seg]
	s.damaged[seg] = true
	s.mu.Unlock()
	known := len(bad) > 0 // every bad shard is in a dir already reported missing
	for _, j := range bad {
		known = known && s.isMissing(j)
	}
	if first && !known {
		s.log.Warn("segment damaged, read reconstructed from parity; run scrub --repair", "segment", segName(seg), "bad_shards", bad, "cause", cause)
	}
}

// readHealthy reads segment bytes [off, off+len(p)) from the data shards.
func (s *Store) readHealthy(ctx context.Context, segID uint64, seg index.Segment, off int64, p []byte) error {
	L := erasure.ShardLen(seg.SegLen, seg.K)
	for len(p) > 0 {
		i := int(off / L)
		local := off % L
		n := min(int64(len(p)), L-local)
		if err := s.backends[i].GetRange(ctx, segName(segID), erasure.HeaderSize+local, p[:n]); err != nil {
			return fmt.Errorf("read shard %d of segment %016x: %w", i, segID, err)
		}
		p, off = p[n:], off+n
	}
	return nil
}

// shardPiece is one shard's checked slice of a block-aligned range.
type shardPiece struct {
	data []byte
	bad  map[int]bool // bad block numbers; nil data means all bad
}

// readVerified fills p with segment bytes [off, off+len(p)), checking every
// block it reads and reconstructing bad ones from parity; shards in
// exclude are treated as bad without reading them. It returns the shards
// found bad.
func (s *Store) readVerified(ctx context.Context, segID uint64, seg index.Segment, off int64, p []byte, exclude map[int]bool) ([]int, error) {
	L := erasure.ShardLen(seg.SegLen, seg.K)
	n := seg.K + seg.M
	badShards := map[int]bool{}
	for len(p) > 0 {
		d := int(off / L)
		local := off % L
		cnt := min(int64(len(p)), L-local)
		first := int(local / erasure.BlockSize)
		last := int((local + cnt - 1) / erasure.BlockSize)
		lo := int64(first) * erasure.BlockSize
		hi := min(int64(last+1)*erasure.BlockSize, L)
		pieces := make([]shardPiece, n)
		// The data shard alone is enough when its blocks check out.
		if !exclude[d] {
			pieces[d] = s.readPiece(ctx, segID, d, L, first, lo, hi)
		}
		if pieces[d].data == nil || len(pieces[d].bad) > 0 {
			g, gctx := errgroup.WithContext(ctx)
			for j := range n {
				if j != d && !exclude[j] {
					g.Go(func() error {
						pieces[j] = s.readPiece(gctx, segID, j, L, first, lo, hi)
						return nil
					})
				}
			}
			g.Wait()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			for j, pc := range pieces {
				if pc.data == nil || len(pc.bad) > 0 {
					badShards[j] = true
				}
			}
			if err := s.reconstructRange(pieces, first, lo, hi, true); err != nil {
				return nil, &DamageError{Segment: segID, Bad: sortedKeys(badShards), K: seg.K, M: seg.M, Err: err}
			}
		}
		copy(p[:cnt], pieces[d].data[local-lo:])
		p, off = p[cnt:], off+cnt
		for _, pc := range pieces {
			if pc.data != nil {
				s.putChunkBuf(pc.data)
			}
		}
	}
	return sortedKeys(badShards), nil
}

func sortedKeys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// readPiece reads shard j's data bytes [lo, hi) and the checksums of blocks
// first.. and checks them.
func (s *Store) readPiece(ctx context.Context, segID uint64, j int, L int64, first int, lo, hi int64) shardPiece {
	data := s.chunkBuf(int(hi - lo))[:hi-lo]
	nb := erasure.Blocks(hi - lo) // lo is block aligned
	table := make([]byte, 4*nb)
	name := segName(segID)
	if err := s.backends[j].GetRange(ctx, name, erasure.HeaderSize+lo, data); err != nil {
		s.putChunkBuf(data)
		return shardPiece{}
	}
	if err := s.backends[j].GetRange(ctx, name, erasure.TableOffset(L)+4*int64(first), table); err != nil {
		s.putChunkBuf(data)
		return shardPiece{}
	}
	bad := map[int]bool{}
	for _, b := range erasure.BadBlocks(segID, j, first, data, table) {
		bad[b] = true
	}
	return shardPiece{data: data, bad: bad}
}

// reconstructRange repairs, in place, the bad blocks of every piece of a
// block-aligned shard range [lo, hi) starting at block first. Blocks are
// reconstructed row by row when different shards fail in different rows.
func (s *Store) reconstructRange(pieces []shardPiece, first int, lo, hi int64, dataOnly bool) error {
	n := len(pieces)
	union := map[int]bool{}
	for j, pc := range pieces {
		if pc.data == nil || len(pc.bad) > 0 {
			union[j] = true
		}
	}
	rows := [][2]int64{{lo, hi}} // one pass over the whole range when possible
	if n-len(union) < s.k {
		rows = rows[:0]
		for b := lo; b < hi; b += erasure.BlockSize {
			rows = append(rows, [2]int64{b, min(b+erasure.BlockSize, hi)})
		}
	}
	for _, r := range rows {
		shards := make([][]byte, n)
		var missing []int
		for j, pc := range pieces {
			ok := pc.data != nil
			if ok && len(rows) == 1 {
				ok = len(pc.bad) == 0
			} else if ok {
				ok = !pc.bad[first+int((r[0]-lo)/erasure.BlockSize)]
			}
			if ok {
				shards[j] = pc.data[r[0]-lo : r[1]-lo]
			} else {
				missing = append(missing, j)
			}
		}
		if len(missing) == 0 {
			continue
		}
		if len(rows) == 1 {
			for _, j := range missing {
				if !dataOnly || j < s.k {
					// Reconstruct fills zero-length slices with room in place.
					shards[j] = s.chunkBuf(int(hi - lo))
				}
			}
		}
		if err := s.coder.Reconstruct(shards, dataOnly); err != nil {
			return fmt.Errorf("shard bytes %d..%d: %w", r[0], r[1], err)
		}
		for _, j := range missing {
			if shards[j] == nil {
				continue // parity not restored on a data-only read
			}
			if len(rows) == 1 {
				if dataOnly && pieces[j].data != nil {
					s.putChunkBuf(pieces[j].data) // scrub's are file slices
				}
				pieces[j].data = shards[j]
				continue
			}
			if pieces[j].data == nil {
				pieces[j].data = make([]byte, hi-lo)
			}
			copy(pieces[j].data[r[0]-lo:], shards[j])
		}
	}
	return nil
}
