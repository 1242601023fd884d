package store

import (
	"context"
	"fmt"

	"github.com/strata-backup/strata/store/shard"
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
	var spaces []shard.Space
	perDev := map[string]uint64{}
	for i, b := range s.backends {
		if s.isMissing(i) {
			continue // its share of capacity is unknown until it is back
		}
		sp, ok := b.(shard.Spacer)
		if !ok {
			return st, nil
		}
		space, err := sp.Space(ctx)
		if err != nil {
			return st, fmt.Errorf("stats: shard %d: %w", i, err)
		}
		spaces = append(spaces, space)
		perDev[space.Device]++
	}
	minTotal, minFree := ^uint64(0), ^uint64(0)
	for _, sp := range spaces {
		n := perDev[sp.Device]
		minTotal = min(minTotal, sp.Total/n)
		minFree = min(minFree, sp.Free/n)
	}
	st.Capacity = minTotal * uint64(s.k)
	st.Free = minFree * uint64(s.k)
	return st, nil
}
