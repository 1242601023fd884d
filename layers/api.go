package layers

// This file is the contract between layers and its consumers (fs, nbd,
// cmd/strata). Signatures here are fixed; bodies are filled in by the layers
// implementation. Change a signature only together with every caller.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/chunker"
)

// Errors callers branch on. fs maps them to errno in one place; nbd to NBD
// error replies; cmd/strata to messages and exit codes.
var (
	ErrNotFound        = errors.New("not found")                   // ENOENT
	ErrExists          = errors.New("already exists")              // EEXIST
	ErrNotDir          = errors.New("not a directory")             // ENOTDIR
	ErrIsDir           = errors.New("is a directory")              // EISDIR
	ErrNotEmpty        = errors.New("directory not empty")         // ENOTEMPTY
	ErrReadOnly        = errors.New("read-only")                   // EROFS / NBD EPERM
	ErrNoSpace         = errors.New("no space left in repository") // ENOSPC
	ErrInvalid         = errors.New("invalid argument")            // EINVAL
	ErrNoXattr         = errors.New("no such attribute")           // ENODATA
	ErrNameTooLong     = errors.New("name too long")               // ENAMETOOLONG
	ErrRange           = errors.New("result too large")            // ERANGE
	ErrUnknownVolume   = errors.New("unknown volume")
	ErrWrongType       = errors.New("wrong volume type")
	ErrVolumeExists    = errors.New("volume already exists")
	ErrNoRevisions     = errors.New("volume has no revisions")
	ErrUnknownRevision = errors.New("unknown revision")
)

// LostDataError refuses a commit while staging holds files whose data a
// crash lost (they read as holes, with the Unix epoch as mtime): a
// revision of them would keep zeros where the files had data. Running the
// backup again rewrites them; CommitOptions.AllowLost commits anyway.
//
// For a block volume it counts Blocks instead: blocks written after the
// last FLUSH that a crash reverted to their previous contents, found by
// the recovery at At. A revision would hold a mix of the new image and
// the old one. Nothing tells cheaply that a rerun copy rewrote them all,
// so only a commit with AllowLost clears the condition.
type LostDataError struct {
	Volume string
	Files  int
	Paths  []string // some of them, to show
	Blocks int64
	// Changes: a file tree's staging may have lost the changes made from
	// this time on (zero: none known); At is when that was found.
	Changes time.Time
	At      time.Time
}

func (e *LostDataError) Error() string {
	if e.Files == 0 && e.Blocks == 0 && !e.Changes.IsZero() {
		return fmt.Sprintf("staging of %s may have lost the changes made after %s: the server stopped (a crash, kill -9 or power loss) before it saved them, as found at %s",
			e.Volume, e.Changes.UTC().Format("2006-01-02 15:04:05 UTC"), e.At.UTC().Format("2006-01-02 15:04:05 UTC"))
	}
	if e.Files == 0 && e.Blocks > 0 {
		return fmt.Sprintf("staging of %s lost at least %d blocks written after the last flush in a crash (found at %s, when the repository was opened again)",
			e.Volume, e.Blocks, e.At.UTC().Format("2006-01-02 15:04:05 UTC"))
	}
	s := fmt.Sprintf("staging of %s has %d files whose data a crash lost", e.Volume, e.Files)
	if len(e.Paths) > 0 {
		s += ": " + strings.Join(e.Paths, ", ")
		if e.Files > len(e.Paths) {
			s += ", ..."
		}
	}
	if !e.Changes.IsZero() {
		s += fmt.Sprintf("; changes made after %s may be lost too", e.Changes.UTC().Format("2006-01-02 15:04:05 UTC"))
	}
	return s
}

// ChunkStore is what layers needs from the extent store. *store.Store
// satisfies it.
type ChunkStore interface {
	// Put stores data (if not already present) and adds one reference to
	// it. Callers never pass all-zero data: that is a hole.
	Put(ctx context.Context, kind chunk.Kind, data []byte) (id chunk.ID, added bool, err error)
	// Get returns the plaintext of a chunk.
	Get(ctx context.Context, id chunk.ID) ([]byte, error)
	// Release drops one reference from each id (once per occurrence).
	Release(ctx context.Context, ids []chunk.ID) error
	// Retain adds one reference to each id (once per occurrence), as a
	// Put of its data would; durable at the next Flush, like Release. A
	// staging file rewritten in place keeps the chunks it does not
	// touch this way (spool.go). Every id must be stored: an unknown one
	// fails, and then no reference is added.
	Retain(ctx context.Context, ids []chunk.ID) error
	// Flush makes every Put that returned before it durable.
	Flush(ctx context.Context) error
}

// Options configure Open. The zero value is usable except for SpoolDir.
type Options struct {
	Logger   *slog.Logger     // nil discards
	Now      func() time.Time // nil means time.Now
	SpoolDir string           // local directory for staging write buffers (REPO/spool)
	Chunker  chunker.Params   // fs file chunking (format.Config.Chunker); zero = defaults
	// EarlyStore is how many bytes a staging file's spool may gain before
	// its data so far goes to the store (early.go); 0 means 256 MiB.
	EarlyStore int64
	// IdleSync: a file tree's staging with unsaved changes is made
	// durable once no change came for this long, or once its oldest
	// unsaved change is MaxUnsaved old (as a disk's page cache writes back
	// after 30 s). Zero means 2 s and 30 s; negative turns it off.
	IdleSync, MaxUnsaved time.Duration
}

// VolumeType is "fs" (a file tree) or "block" (a fixed-size disk image).
type VolumeType string

const (
	TypeFS    VolumeType = "fs"
	TypeBlock VolumeType = "block"
)

// VolumeSpec describes a volume at creation. Size and BlockSize are for
// block volumes; BlockSize 0 means the default.
type VolumeSpec struct {
	Type      VolumeType
	Size      int64
	BlockSize int
}

// VolumeInfo describes a volume.
type VolumeInfo struct {
	Name      string
	Type      VolumeType
	Size      int64 // block volumes: device size
	BlockSize int   // block volumes
	Created   time.Time
	Revisions int
	// LostFiles (fs) and LostBlocks (block) count staging data a crash
	// lost, which makes Commit refuse without AllowLost (LostDataError);
	// LostChanges (fs) is the first change a crash may have rolled back
	// (the server stopped with it unsaved), which also makes Commit refuse
	// until staging is written again. LostAt is when the recovery that
	// found lost blocks or changes ran.
	LostFiles   int       `json:",omitempty"`
	LostBlocks  int64     `json:",omitempty"`
	LostChanges time.Time `json:",omitzero"`
	LostAt      time.Time `json:",omitzero"`
	// Unsaved (fs) is the first change to staging not yet durable (zero:
	// none); the idle sync saves it soon after writes stop.
	Unsaved time.Time `json:",omitzero"`
	// Uncommitted is the first change to staging since the last commit
	// (zero: none known; it survives a clean restart, not a crash).
	Uncommitted time.Time `json:",omitzero"`
}

// Revision is an immutable committed state of a volume.
type Revision struct {
	Volume  string
	ID      string // random, hex; unique prefixes resolve
	Seq     uint64 // layer sequence number sealed by this revision
	Time    time.Time
	Tags    []string
	Message string
	Size    int64 // logical bytes visible in the revision
	Added   int64 // bytes newly stored by this commit after dedup and compression
	Files   int64 // fs volumes: inodes in the revision
	// Duration is how long the backup took as far as strata sees it: from
	// the first change to staging after the previous commit (or from the
	// start of the commit, if nothing changed) to the end of the commit.
	// The first change is kept in memory only, so after a server restart
	// the time counts from the first change since then.
	Duration  time.Duration
	Protected bool
}

// CommitOptions set what a commit records. Zero Time means now.
type CommitOptions struct {
	Time time.Time
	// Tags are trimmed of surrounding space and must pass CheckTag;
	// duplicates are dropped.
	Tags    []string
	Message string
	// AllowLost commits staging files whose data a crash lost as they
	// read (holes), and a disk whose blocks a crash reverted as it reads,
	// instead of failing with *LostDataError. It clears a disk's
	// lost-blocks condition.
	AllowLost bool
}

// Ino is an inode number, stable across revisions of a volume. The root
// directory is RootIno.
type Ino uint64

// RootIno is the root directory of every fs volume.
const RootIno Ino = 1

// Attr are the attributes of an inode. Mode carries the file type bits
// (syscall.S_IFREG, S_IFDIR, ...) and permission bits.
type Attr struct {
	Ino   Ino
	Mode  uint32
	Uid   uint32
	Gid   uint32
	Size  int64
	Nlink uint32
	Rdev  uint64
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
	// Holes is how much of a regular file's Size is holes, not stored
	// (0: none, or not known: records from before it was kept, files
	// with writes not flushed yet). st_blocks follows it, so du and
	// cp's sparse detection see a sparse file as sparse.
	Holes int64
}

// Dirent is one directory entry.
type Dirent struct {
	Name string
	Ino  Ino
	Mode uint32 // type bits only are guaranteed
}

// SetAttr says which attributes to change; nil fields stay.
type SetAttr struct {
	Mode  *uint32 // permission bits only
	Uid   *uint32
	Gid   *uint32
	Size  *int64
	Atime *time.Time
	Mtime *time.Time
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace uint32 = 1
	RenameExchange  uint32 = 2
)

// StatFS reports repository capacity for statfs(2).
type StatFS struct {
	TotalBytes, FreeBytes, AvailBytes uint64
	Files, FreeFiles                  uint64
}

// Extent is a run of a block device or file that is all data or all hole.
type Extent struct {
	Off, Len int64
	Hole     bool
}

// DiffEntry is one changed path between two revisions.
type DiffEntry struct {
	Path    string
	Change  byte  // '+' added, '-' removed, 'M' content changed, 'T' type changed, 'A' attributes only
	OldSize int64 // regular files: the size; symlinks: the target's length, as stat gives
	NewSize int64
	// OldTarget and NewTarget are a symlink's targets ("" for other types).
	OldTarget, NewTarget string
	Off                  int64 // block volumes: the changed byte range (Path "disk.img", Change 'M')
	Len                  int64
}

// Repo is the versioned metadata of every volume in a repository.
// Methods are safe for concurrent use.
type Repo struct{ repo }

// Open opens the metadata model kept in db (keys under the "l/" prefix are
// layers'), storing data through cs.
func Open(ctx context.Context, db *badger.DB, cs ChunkStore, opts Options) (*Repo, error) {
	return open(ctx, db, cs, opts)
}

// Tree is a read-only view of an fs volume at one revision (or, as part of
// Staging, the staging head). Reads never load a whole directory or file
// into memory.
type Tree struct{ tree }

// Staging is the writable head of an fs volume. It has every Tree method
// (via Tree()) plus writes. Writes are buffered in the spool and chunked off
// the request path; FlushFile and Sync make them durable.
type Staging struct{ staging }

// Disk is a block volume at one revision (read-only), its staging head
// (read-write) or a throwaway overlay over a revision.
type Disk struct{ disk }
