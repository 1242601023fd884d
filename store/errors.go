package store

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/strata-backup/strata/store/chunk"
)

// Errors callers branch on.
var (
	// ErrNotFound means no chunk has the id.
	ErrNotFound = errors.New("chunk not found")
	// ErrNoSpace means a shard, journal or index write hit a full
	// filesystem. Errors carrying it also match syscall.ENOSPC.
	ErrNoSpace = errors.New("no space left on a shard device")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store closed")
)

// LockedError means another process holds the repository.
type LockedError struct {
	PID int // 0 if the holder's PID could not be read
}

func (e *LockedError) Error() string {
	if e.PID == 0 {
		return "repository is locked by another process"
	}
	return fmt.Sprintf("repository is locked by PID %d", e.PID)
}

// DamageError means more shards of a segment are missing or corrupt than
// parity can restore: the data of the named segment (and chunk) is lost.
type DamageError struct {
	Segment uint64
	Chunk   chunk.ID // zero if the damage was found outside a chunk read
	What    string   // what Chunk holds, from Options.Describe; "" if unknown
	Bad     []int    // shard indexes found missing or corrupt
	K, M    int
	Err     error
}

func (e *DamageError) Error() string {
	s := fmt.Sprintf("segment %016x", e.Segment)
	switch {
	case !e.Chunk.IsZero() && e.What != "":
		s += fmt.Sprintf(" (chunk %s: %s)", e.Chunk.Short(), e.What)
	case !e.Chunk.IsZero():
		s += fmt.Sprintf(" (chunk %s)", e.Chunk.Short())
	}
	s += fmt.Sprintf(": shards %v of %d+%d damaged, more than parity can restore", e.Bad, e.K, e.M)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *DamageError) Unwrap() error { return e.Err }

// ErrReferencesPending is returned by GC while reference counts are not
// trustworthy: an index rebuild or SetReferences did not finish.
var ErrReferencesPending = errors.New("chunk reference counts are being rebuilt: an index rebuild did not finish; run `strata repair --rebuild-index` again before collecting garbage")

// ShardDirError means a shard directory is missing or unusable at Open.
type ShardDirError struct {
	Index int
	Dir   string
	Err   error
}

func (e *ShardDirError) Error() string {
	return fmt.Sprintf("shard dir %d (%s): %v: mount or restore the disk; if its shards are lost, create the empty directory and run `strata scrub --repair` to rebuild them from parity", e.Index, e.Dir, e.Err)
}

func (e *ShardDirError) Unwrap() error { return e.Err }

// noSpaceError marks an error chain that contains syscall.ENOSPC so that it
// also matches ErrNoSpace.
type noSpaceError struct{ err error }

func (e noSpaceError) Error() string        { return e.err.Error() }
func (e noSpaceError) Unwrap() error        { return e.err }
func (e noSpaceError) Is(target error) bool { return target == ErrNoSpace }

// classify adds ErrNoSpace to chains that carry ENOSPC.
func classify(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return noSpaceError{err}
	}
	return err
}
