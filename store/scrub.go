package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sync/errgroup"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/erasure"
	"github.com/strata-backup/strata/store/index"
	"github.com/strata-backup/strata/store/shard"
)

// ScrubOptions configure Scrub.
type ScrubOptions struct {
	// ReadData is the percentage (0..100) of chunks to decrypt and check
	// against their id, chosen by id so repeated runs cover the same set.
	ReadData float64
	// Repair rewrites missing or corrupt shards from parity.
	Repair bool
	// Progress, if set, is called after each segment with segments done
	// and total, on the calling goroutine.
	Progress func(done, total int64)
}

// SegmentDamage describes what Scrub found wrong with one segment.
type SegmentDamage struct {
	Segment uint64
	Missing []int         // shard indexes with no file
	Corrupt map[int][]int // shard index → bad data blocks
	// Unusable lists shards whose size, header or checksum table is
	// damaged (the whole shard is rewritten on repair).
	Unusable []int
	// BadChunks are chunks that failed decryption (ReadData).
	BadChunks []chunk.ID
	// Chunks, for a Lost segment, are the chunks indexed in it: those
	// whose bytes fall in a lost block row cannot be read back (Get
	// tells which with a *DamageError).
	Chunks []chunk.ID
	// Affected says what Chunks and BadChunks hold, from
	// Options.Describe (deduplicated, sorted; empty without it).
	Affected []string
	Lost     bool // more damage than parity covers in some block row
	Repaired bool // every damaged shard was rewritten
	// Superseded: damaged beyond parity, but nothing in it is needed any
	// more: each chunk was stored again elsewhere (lost.go) or freed.
	// GC deletes it.
	Superseded bool
	// Readable: chunks of a Lost segment that still read (they lie in
	// surviving data shards); Chunks lists only the others. Rescued:
	// readable chunks Repair stored anew in a healthy segment.
	Readable, Rescued int
	Err               error // why repair or verification stopped, if it did
}

// ScrubReport summarizes a scrub.
type ScrubReport struct {
	Segments      int64
	Shards        int64
	BytesRead     int64
	ChunksChecked int64
	Damaged       []SegmentDamage
	// Orphans are segments with shard files but no index entry: left by
	// a crash or an interrupted GC; GC deletes them. IndexSuspect: too
	// many to be that (orphanSet.suspect); the index looks lost or
	// damaged, GC keeps them, and repair --rebuild-index is the way out.
	Orphans      []uint64
	IndexSuspect bool
	// IndexDamage says which index tables fail their checksums
	// (index.VerifyTables); repair --rebuild-index is the way out.
	IndexDamage string
	// MissingShardDirs are shard dirs that are missing or unusable after
	// the scrub (Repair recreates missing ones whose parent exists).
	MissingShardDirs []int
}

// OK reports whether nothing was found wrong (orphans of interrupted
// writes aside).
func (r ScrubReport) OK() bool {
	if len(r.MissingShardDirs) > 0 || r.IndexSuspect || r.IndexDamage != "" {
		return false
	}
	for _, d := range r.Damaged {
		if !d.Repaired && !d.Superseded {
			return false
		}
	}
	return true
}

// Scrub reads every shard of every indexed segment, checks each block's
// checksum, optionally decrypts a share of the chunks, and with Repair
// rewrites damaged shards from parity.
func (s *Store) Scrub(ctx context.Context, opts ScrubOptions) (ScrubReport, error) {
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	var rep ScrubReport
	if opts.Repair {
		s.restoreShardDirs(ctx)
	}
	rep.MissingShardDirs = s.MissingShardDirs()
	segs, err := s.indexedSegments()
	if err != nil {
		return rep, err
	}
	total := int64(len(segs))
	for i, sg := range segs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		d, read, checked := s.scrubSegment(ctx, sg.id, sg.rec, opts)
		rep.Segments++
		rep.Shards += int64(sg.rec.K + sg.rec.M)
		rep.BytesRead += read
		rep.ChunksChecked += checked
		lost := d != nil && d.Lost && !d.Repaired
		if err := s.setLost(sg.id, lost); err != nil {
			return rep, err
		}
		if d != nil {
			rep.Damaged = append(rep.Damaged, *d)
			if d.Lost {
				s.log.Error("segment lost", "segment", segName(sg.id), "err", d.Err)
			}
		}
		if opts.Progress != nil {
			opts.Progress(int64(i+1), total)
		}
	}
	if err := s.nameDamage(rep.Damaged); err != nil {
		return rep, err
	}
	if err := s.triageLost(ctx, rep.Damaged, opts.Repair); err != nil {
		return rep, err
	}
	if err := s.describeDamage(rep.Damaged); err != nil {
		return rep, err
	}
	orphans, err := s.orphans(ctx)
	if err != nil {
		return rep, err
	}
	rep.Orphans, rep.IndexSuspect = orphans.ids, orphans.suspect()
	// The tables were checked when the index was opened; this finds
	// damage done since, before a restart would refuse to open it.
	if err := index.VerifyTables(filepath.Join(s.dir, "index"), s.log); err != nil {
		var de *index.DamagedError
		if !errors.As(err, &de) {
			return rep, err
		}
		rep.IndexDamage = strings.Join(de.Tables, "; ")
	}
	return rep, nil
}

// nameDamage fills Chunks of lost segments (one pass over the chunk
// index) with the chunks something still references.
func (s *Store) nameDamage(damaged []SegmentDamage) error {
	lost := map[uint64]*SegmentDamage{}
	for i := range damaged {
		if damaged[i].Lost {
			lost[damaged[i].Segment] = &damaged[i]
		}
	}
	if len(lost) > 0 {
		err := s.db.View(func(txn *badger.Txn) error {
			return index.EachChunk(txn, func(id chunk.ID, c index.Chunk) error {
				if d := lost[c.Segment]; d != nil && c.Refs > 0 {
					d.Chunks = append(d.Chunks, id)
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("scrub: list chunks of lost segments: %w", err)
		}
	}
	return nil
}

// describeDamage fills Affected of every damaged segment with chunks to
// name.
func (s *Store) describeDamage(damaged []SegmentDamage) error {
	if s.describe == nil {
		return nil
	}
	for i := range damaged {
		d := &damaged[i]
		seen := map[string]bool{}
		for _, id := range append(slices.Clip(d.Chunks), d.BadChunks...) {
			if w := s.describe(id); w != "" && !seen[w] {
				seen[w] = true
				d.Affected = append(d.Affected, w)
			}
		}
		slices.Sort(d.Affected)
	}
	return nil
}

type segEntry struct {
	id  uint64
	rec index.Segment
}

func (s *Store) indexedSegments() ([]segEntry, error) {
	var out []segEntry
	err := s.db.View(func(txn *badger.Txn) error {
		return index.EachSegment(txn, func(id uint64, rec index.Segment) error {
			out = append(out, segEntry{id, rec})
			return nil
		})
	})
	return out, err
}

// scrubSegment checks (and repairs) one segment. It returns nil damage if
// all is well.
func (s *Store) scrubSegment(ctx context.Context, segID uint64, rec index.Segment, opts ScrubOptions) (*SegmentDamage, int64, int64) {
	n := rec.K + rec.M
	L := erasure.ShardLen(rec.SegLen, rec.K)
	size := erasure.FileSize(L)
	files := make([][]byte, n)
	checks := make([]erasure.Check, n)
	missing := make([]bool, n)
	var read int64
	g, gctx := errgroup.WithContext(ctx)
	for j := range n {
		g.Go(func() error {
			info, err := s.backends[j].Stat(gctx, segName(segID))
			if errors.Is(err, shard.ErrNotFound) {
				missing[j] = true
				return nil
			}
			if err == nil && info.Size != size {
				checks[j] = erasure.Check{Err: fmt.Errorf("shard file has %d bytes, want %d: %w", info.Size, size, erasure.ErrCorrupt)}
				return nil
			}
			f := make([]byte, size)
			if err == nil {
				err = s.backends[j].GetRange(gctx, segName(segID), 0, f)
			}
			if errors.Is(err, shard.ErrNotFound) {
				missing[j] = true
				return nil
			}
			if err != nil {
				checks[j] = erasure.Check{Err: err}
				return nil
			}
			files[j] = f
			checks[j] = erasure.Verify(f, segID, j, rec.SegLen, rec.K)
			return nil
		})
	}
	g.Wait()
	d := &SegmentDamage{Segment: segID, Corrupt: map[int][]int{}}
	pieces := make([]shardPiece, n)
	damaged := false
	for j := range n {
		switch {
		case missing[j]:
			d.Missing = append(d.Missing, j)
			damaged = true
		case checks[j].HeaderDamaged:
			// Its data blocks still check: usable for
			// reconstruction, rewritten whole on repair.
			d.Unusable = append(d.Unusable, j)
			damaged = true
			pieces[j] = shardPiece{data: files[j][erasure.HeaderSize : erasure.HeaderSize+L], bad: map[int]bool{}}
			for _, b := range checks[j].Bad {
				pieces[j].bad[b] = true
			}
		case checks[j].Err != nil:
			d.Unusable = append(d.Unusable, j)
			damaged = true
		default:
			pieces[j] = shardPiece{data: files[j][erasure.HeaderSize : erasure.HeaderSize+L], bad: map[int]bool{}}
			read += size
			if len(checks[j].Bad) > 0 {
				d.Corrupt[j] = checks[j].Bad
				damaged = true
				for _, b := range checks[j].Bad {
					pieces[j].bad[b] = true
				}
			}
		}
	}
	if damaged {
		if err := s.reconstructRange(pieces, 0, 0, L, false); err != nil {
			d.Lost = true
			d.Err = &DamageError{Segment: segID, Bad: badList(d), K: rec.K, M: rec.M, Err: err}
			return d, read, 0
		}
		if opts.Repair {
			d.Err = s.repairShards(ctx, segID, rec, L, pieces, d)
			d.Repaired = d.Err == nil
		}
	}
	var checked int64
	if opts.ReadData > 0 {
		checked = s.checkChunks(segID, rec, L, pieces, opts.ReadData, d)
		if len(d.BadChunks) > 0 {
			damaged = true
			d.Repaired = false
		}
	}
	if !damaged {
		return nil, read, checked
	}
	return d, read, checked
}

func badList(d *SegmentDamage) []int {
	m := map[int]bool{}
	for _, j := range d.Missing {
		m[j] = true
	}
	for _, j := range d.Unusable {
		m[j] = true
	}
	for j := range d.Corrupt {
		m[j] = true
	}
	return sortedKeys(m)
}

// repairShards rewrites every damaged shard of a segment from the
// reconstructed data regions.
func (s *Store) repairShards(ctx context.Context, segID uint64, rec index.Segment, L int64, pieces []shardPiece, d *SegmentDamage) error {
	for _, j := range badList(d) {
		f := make([]byte, erasure.FileSize(L))
		copy(f[erasure.HeaderSize:], pieces[j].data)
		erasure.Finish(f, erasure.Header{K: rec.K, M: rec.M, Index: j, Segment: segID, SegLen: rec.SegLen, DataLen: L})
		if err := s.backends[j].Put(ctx, segName(segID), f); err != nil {
			return classify(fmt.Errorf("repair shard %d of segment %016x: %w", j, segID, err))
		}
		s.log.Info("repaired shard", "segment", segName(segID), "shard", j)
	}
	s.mu.Lock()
	delete(s.damaged, segID)
	s.mu.Unlock()
	return nil
}

// checkChunks decrypts the sampled chunks of a segment (from its trailer)
// and checks each plaintext against its id.
func (s *Store) checkChunks(segID uint64, rec index.Segment, L int64, pieces []shardPiece, pct float64, d *SegmentDamage) int64 {
	segBytes := func(off int64, n int) ([]byte, error) {
		out := make([]byte, 0, n)
		for len(out) < n {
			i := int(off / L)
			local := off % L
			m := min(int64(n-len(out)), L-local)
			out = append(out, pieces[i].data[local:local+m]...)
			off += m
		}
		return out, nil
	}
	entries, err := s.parseTrailer(segID, rec.SegLen, segBytes)
	if err != nil {
		d.Err = err
		return 0
	}
	var checked int64
	limit := uint64(pct / 100 * (1 << 32))
	for _, e := range entries {
		if pct < 100 && uint64(binary.BigEndian.Uint32(e.id[28:])) >= limit {
			continue
		}
		sealed, _ := segBytes(int64(e.off), int(e.n))
		plain, err := s.keys.Open(nil, sealed, e.id)
		if err == nil && s.keys.ID(plain) != e.id {
			err = fmt.Errorf("chunk %s: plaintext does not match its id", e.id.Short())
		}
		if err != nil {
			d.BadChunks = append(d.BadChunks, e.id)
			d.Err = err
		}
		checked++
	}
	return checked
}

// orphanSet is what orphans found: segments with shard files but no index
// entry, and how many segments the index knows.
type orphanSet struct {
	ids     []uint64
	indexed int
}

// suspect reports that the orphans are too many to be what an interrupted
// write leaves (at most the segments that were sealing), or that the index
// knows no segment at all: the index is lost or damaged, not the segments,
// and deleting them would delete the repository (QA: prune after
// 'rm -rf REPO/index' removed every shard file).
func (o orphanSet) suspect() bool {
	return len(o.ids) > maxSyncing+maxPendingSeals+1 || (len(o.ids) > 0 && o.indexed == 0)
}

// orphans finds segments that have shard files but no index entry and are
// not being written by this process.
func (s *Store) orphans(ctx context.Context) (orphanSet, error) {
	known := map[uint64]bool{}
	// In-flight segments first: one committed after this snapshot is in
	// the index read below.
	s.mu.Lock()
	limit := s.nextSeg
	for _, m := range s.mem {
		if m.seg != nil {
			known[m.seg.id] = true
		}
	}
	for _, f := range s.failed {
		known[f.id] = true
	}
	for seg := range s.sealing {
		known[seg.id] = true // shard files written, not yet indexed
	}
	if s.open != nil {
		known[s.open.id] = true
	}
	s.mu.Unlock()
	indexed, err := s.indexedSegments()
	if err != nil {
		return orphanSet{}, err
	}
	for _, e := range indexed {
		known[e.id] = true
	}
	found := map[uint64]bool{}
	for i, b := range s.backends {
		err := b.List(ctx, func(info shard.Info) error {
			id, ok := parseSegName(info.Name)
			if !ok {
				return nil
			}
			if !known[id] && id < limit {
				found[id] = true
			}
			return nil
		})
		if err != nil {
			return orphanSet{}, fmt.Errorf("list shard dir %d: %w", i, err)
		}
	}
	out := make([]uint64, 0, len(found))
	for id := range found {
		out = append(out, id)
	}
	slices.Sort(out)
	return orphanSet{ids: out, indexed: len(indexed)}, nil
}
