package store

import (
	"context"
	"fmt"
	"math"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store/shard"
)

// A repository whose shard filesystems are full could not free space
// through strata itself: prune writes metadata, and GC writes a repacked
// segment before it deletes the ones it empties. So data Puts (what
// backups write) stop short of a reserve, which only metadata and GC use.

// roomReserve is that reserve in bytes of chunk data, the unit of
// Stats.Free: one segment of metadata (commit, prune's markers) and one
// segment GC repacks into before deleting.
func (s *Store) roomReserve() int64 { return 2 * int64(s.cfg.SegmentSize) }

// RepoReserve is the free space data Puts leave on the filesystem of the
// repository's own directory, where the index lives: badger maps its
// files into memory, and a write into them on a full filesystem kills the
// process (SIGBUS, seen on a full tmpfs; the repository then could not be
// opened until space was freed). The index grows with metadata, which
// the reserve is for. Layers' spool stops earlier (layers.Options).
const RepoReserve = 64 << 20

// roomCheckEvery is how long a measurement of free space is trusted while
// far from the reserve (nearer, every data Put measures).
const roomCheckEvery = time.Second

// room is the last measurement of free space (checkRoom).
type room struct {
	mu    sync.Mutex
	at    time.Time
	left  int64 // free, less what is not written yet and the reserve, at `at`; MaxInt64 if unknown
	since int64 // data bytes put since `at`
	// repoFull: left was set by the repository directory's filesystem
	// (repoLeft), not by the shards'.
	repoFull bool
}

// repoLeft is what data Puts may still add to the filesystem of the
// repository directory (the open segment's scratch file is there) before
// RepoReserve; MaxInt64 if statfs fails.
func (s *Store) repoLeft() int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return math.MaxInt64
	}
	return int64(st.Bavail)*int64(st.Bsize) - RepoReserve
}

// checkRoom refuses a data Put of n bytes that would eat into the reserve,
// with an error matching ErrNoSpace and syscall.ENOSPC.
func (s *Store) checkRoom(ctx context.Context, n int) error {
	r := &s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) > roomCheckEvery || r.since+int64(n) > r.left {
		r.at, r.since = time.Now(), 0
		r.left = s.roomLeft(ctx)
		r.repoFull = false
		if left := s.repoLeft(); left < r.left {
			r.left, r.repoFull = left, true
		}
	}
	if r.since+int64(n) > r.left {
		if r.repoFull {
			return noSpaceError{fmt.Errorf("less than %d MiB left on the filesystem of %s, kept for the index: %w",
				RepoReserve>>20, s.dir, syscall.ENOSPC)}
		}
		return noSpaceError{fmt.Errorf("less than %d MiB left on the shard filesystems, kept for prune and garbage collection to free space: %w",
			s.roomReserve()>>20, syscall.ENOSPC)}
	}
	r.since += int64(n)
	return nil
}

// roomLeft measures what data Puts may still add: free space less what
// the store holds unwritten and the reserve; MaxInt64 when the backends
// cannot tell (then the write itself reports a full disk), so that an
// unknown measure is not taken again on every Put.
func (s *Store) roomLeft(ctx context.Context) int64 {
	_, free, known, err := s.space(ctx)
	if err != nil || !known {
		return math.MaxInt64
	}
	s.mu.Lock()
	// Sealing segments are counted whole: their data may be released
	// while their sealer runs, so its length is not readable here.
	unwritten := int64(len(s.sealing)+len(s.failed)) * int64(s.cfg.SegmentSize)
	if s.open != nil {
		unwritten += s.open.data.len
	}
	s.mu.Unlock()
	return int64(free) - unwritten - s.roomReserve()
}

// space returns the capacity and free space of the shard filesystems in
// bytes of chunk data: each segment puts 1/K of its size on every shard
// dir, so usable space is K times the smallest per-shard share, and shard
// dirs on one filesystem share its space. known is false when a backend
// cannot tell.
func (s *Store) space(ctx context.Context) (capacity, free uint64, known bool, err error) {
	var spaces []shard.Space
	perDev := map[string]uint64{}
	for i, b := range s.backends {
		if s.isMissing(i) {
			continue // its share of capacity is unknown until it is back
		}
		sp, ok := b.(shard.Spacer)
		if !ok {
			return 0, 0, false, nil
		}
		space, err := sp.Space(ctx)
		if err != nil {
			return 0, 0, false, fmt.Errorf("shard %d: %w", i, err)
		}
		spaces = append(spaces, space)
		perDev[space.Device]++
	}
	if len(spaces) == 0 {
		return 0, 0, false, nil
	}
	minTotal, minFree := ^uint64(0), ^uint64(0)
	for _, sp := range spaces {
		n := perDev[sp.Device]
		minTotal = min(minTotal, sp.Total/n)
		minFree = min(minFree, sp.Free/n)
	}
	return minTotal * uint64(s.k), minFree * uint64(s.k), true, nil
}
