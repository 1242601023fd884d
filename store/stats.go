package store

import (
	"context"
	"fmt"
)

// Stats describes what the store holds and how much room is left.
type Stats struct {
	Chunks       int64 // indexed chunks (live and garbage)
	Segments     int64 // sealed segments
	SegmentBytes int64 // sealed chunk bytes and trailers in sealed segments
	ShardBytes   int64 // bytes of shard files, parity included
	OpenChunks   int64 // chunks not yet in a sealed segment
	OpenBytes    int64 // their sealed bytes
	// DegradedReads counts reads that needed reconstruction since Open.
	DegradedReads int64
	// MissingShardDirs are shard dirs missing or unusable: the store runs
	// degraded (reads reconstruct, new segments lack those shards) until
	// Scrub with Repair recreates them.
	MissingShardDirs []int
	// Capacity and Free are in bytes of chunk data the shard filesystems
	// can hold: each segment puts 1/K of its size on every shard dir, so
	// usable space is K times the smallest per-shard share, and shard dirs
	// on one filesystem share its space.
	Capacity, Free uint64
	// Reserve is the part of Free that data does not get (room.go): at or
	// below it backups are refused until prune gives space back.
	Reserve uint64
	// Avail is what data Puts may still add: Free less Reserve, and no
	// more than the repository directory's filesystem has above
	// RepoReserve (room.go), which may be the smaller one.
	Avail uint64
}

// Stats reports counters and the capacity of the shard filesystems.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	s.mu.Lock()
	st := s.stats
	for _, m := range s.mem {
		st.OpenChunks++
		st.OpenBytes += int64(m.n)
	}
	s.mu.Unlock()
	st.MissingShardDirs = s.MissingShardDirs()
	capacity, free, known, err := s.space(ctx)
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	if known {
		st.Capacity, st.Free = capacity, free
	}
	st.Reserve = uint64(s.roomReserve())
	st.Avail = uint64(max(min(int64(st.Free)-int64(st.Reserve), s.repoLeft()), 0))
	return st, nil
}
