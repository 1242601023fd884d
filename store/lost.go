package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/index"
)

// Lost segments: segments that scrub, or a read, found damaged beyond what
// parity restores. Put does not deduplicate against chunks indexed in
// them: a chunk written again is stored anew and its index record moves
// to the new copy, with the references it had. Chunk ids are content
// addresses, so every revision that referenced the lost copy reads the
// new one: re-sending a lost file heals the older backups too (as a
// re-created chunk heals borg's archives after 'borg check --repair').
// Without this, a lost chunk could never be stored again: every later
// backup deduplicated onto it and carried the unreadable file.
//
// The marks persist in the index (a read that fails on a restart must
// not be needed to find them again); scrub clears a mark when the
// segment reads whole again (a shard dir came back), and GC when it
// deletes the segment.

var lostPrefix = []byte(index.MiscPrefix + "lost/")

func lostKey(seg uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), lostPrefix...), seg)
}

// loadLost reads the marks. Called from Open, before the store is shared.
func (s *Store) loadLost(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: lostPrefix})
	defer it.Close()
	s.lost = map[uint64]bool{}
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) != len(lostPrefix)+8 {
			return fmt.Errorf("lost segment mark %q: %w", k, index.ErrCorrupt)
		}
		s.lost[binary.BigEndian.Uint64(k[len(lostPrefix):])] = true
	}
	return nil
}

// setLost marks segment seg lost, or clears its mark. It writes only
// when the mark changes.
func (s *Store) setLost(seg uint64, lost bool) error {
	s.mu.Lock()
	was := s.lost[seg]
	s.mu.Unlock()
	if was == lost {
		return nil
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		if lost {
			return txn.Set(lostKey(seg), nil)
		}
		return txn.Delete(lostKey(seg))
	})
	if err != nil {
		return fmt.Errorf("mark segment %016x lost=%v: %w", seg, lost, err)
	}
	s.mu.Lock()
	if lost {
		s.lost[seg] = true
	} else {
		delete(s.lost, seg)
	}
	s.mu.Unlock()
	if lost {
		s.log.Warn("segment lost beyond parity: its chunks are stored anew when written again", "segment", segName(seg))
	}
	return nil
}

// LostSegments returns how many segments are marked lost.
func (s *Store) LostSegments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lost)
}

// noteLost marks seg lost when err says a read of it failed beyond what
// parity restores.
func (s *Store) noteLost(seg uint64, err error) {
	var de *DamageError
	if err == nil || !errors.As(err, &de) {
		return
	}
	if err := s.setLost(seg, true); err != nil {
		s.log.Error("mark segment lost", "segment", segName(seg), "err", err)
	}
}

// triageLost narrows the Chunks of the lost segments in damaged to those
// that cannot be read: a segment is lost when some block row has more
// damaged shards than parity, yet chunks lying in the surviving data
// shards still read directly (scrub named files lost that restore gave
// back whole). With repair, the readable chunks are stored anew in a
// healthy segment, so that only the unreadable ones stay behind. A lost
// segment with no unreadable chunk left is no longer Lost: Superseded when
// nothing in it is needed any more, else only short of redundancy.
func (s *Store) triageLost(ctx context.Context, damaged []SegmentDamage, repair bool) error {
	moved := false
	for i := range damaged {
		d := &damaged[i]
		if !d.Lost || d.Repaired {
			continue
		}
		var unreadable []chunk.ID
		for _, id := range d.Chunks {
			plain, err := s.Get(ctx, id)
			var de *DamageError
			switch {
			case errors.As(err, &de):
				unreadable = append(unreadable, id)
				continue
			case errors.Is(err, ErrNotFound):
				continue // freed meanwhile
			case err != nil:
				return fmt.Errorf("scrub: read chunk %s of lost segment %016x: %w", id.Short(), d.Segment, err)
			}
			if !repair {
				continue
			}
			loc, _, err := s.locate(id)
			if err != nil {
				return fmt.Errorf("scrub: rescue chunk %s: %w", id.Short(), err)
			}
			if loc.Segment != d.Segment {
				continue // moved meanwhile
			}
			// Put stores it anew (its segment is marked lost) with one
			// reference more than it had; Release takes that back.
			if _, _, err := s.Put(ctx, loc.Kind, plain); err != nil {
				return fmt.Errorf("scrub: rescue chunk %s: %w", id.Short(), err)
			}
			if err := s.Release(ctx, []chunk.ID{id}); err != nil {
				return fmt.Errorf("scrub: rescue chunk %s: %w", id.Short(), err)
			}
			d.Rescued++
			moved = true
		}
		d.Readable = len(d.Chunks) - len(unreadable)
		d.Chunks = unreadable
		if len(unreadable) == 0 {
			// No data lost: the chunks left only lack redundancy,
			// which Repair's move gives back.
			d.Lost = false
			d.Superseded = d.Rescued == d.Readable
		}
	}
	if moved {
		// Sealed, not journaled: the index names the new copies, with
		// parity, before scrub reports the segment superseded.
		return s.Seal(ctx)
	}
	return nil
}
