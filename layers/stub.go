package layers

// STUB: placeholder bodies so consumers compile against the contract in
// api.go while the implementation is written. The layers implementation
// replaces this file entirely; the method set (names, parameters, results
// and documented behaviour) is the contract.

import (
	"context"
	"errors"
	"time"
)

var errStub = errors.New("layers: not implemented yet")

type stub struct{}

// ---- Repo: volumes, revisions, commit ----

// Close flushes staging buffers and releases resources.
func (r *Repo) Close() error { return errStub }

// CreateVolume creates a volume. Names: [A-Za-z0-9._-], 1-64 chars, not
// starting with '.' or '-'. Errors: ErrVolumeExists, ErrInvalid.
func (r *Repo) CreateVolume(ctx context.Context, name string, spec VolumeSpec) (VolumeInfo, error) {
	return VolumeInfo{}, errStub
}

// Volumes lists volumes sorted by name.
func (r *Repo) Volumes(ctx context.Context) ([]VolumeInfo, error) { return nil, errStub }

// Volume describes one volume. Errors: ErrUnknownVolume.
func (r *Repo) Volume(ctx context.Context, name string) (VolumeInfo, error) {
	return VolumeInfo{}, errStub
}

// RemoveVolume removes a volume and, with force, all its revisions.
// Without force and with revisions, the error is a *HasRevisionsError.
func (r *Repo) RemoveVolume(ctx context.Context, name string, force bool) error { return errStub }

// Revisions lists a volume's revisions, oldest first.
func (r *Repo) Revisions(ctx context.Context, volume string) ([]Revision, error) {
	return nil, errStub
}

// Resolve resolves a revision spec (design.md "Revision specs") at time now.
// Errors: ErrUnknownVolume, ErrNoRevisions, *SpecError (no match or
// ambiguous, with the candidates).
func (r *Repo) Resolve(ctx context.Context, volume, spec string, now time.Time) (Revision, error) {
	return Revision{}, errStub
}

// Commit seals the volume's staging layer as a new revision and opens a new
// staging layer on top, atomically with respect to in-flight writes: a write
// that returned before Commit is in the revision; one started after is not.
// Commit makes the revision durable (store flushed, records written) before
// returning, and writes the layer's records into the store as meta chunks.
func (r *Repo) Commit(ctx context.Context, volume string, opts CommitOptions) (Revision, error) {
	return Revision{}, errStub
}

// SetProtected protects or unprotects a revision from prune.
func (r *Repo) SetProtected(ctx context.Context, volume, id string, protected bool) error {
	return errStub
}

// Diff reports the paths that differ between revisions a and b (ids) of an
// fs volume, in path order; for block volumes, changed byte ranges as
// DiffEntry{Path: "disk.img", ...} runs.
func (r *Repo) Diff(ctx context.Context, volume, a, b string, fn func(DiffEntry) error) error {
	return errStub
}

// Staging returns the writable head of an fs volume (one per volume; every
// call returns the same one). Errors: ErrUnknownVolume, ErrWrongType.
func (r *Repo) Staging(ctx context.Context, volume string) (*Staging, error) { return nil, errStub }

// Snapshot returns a read-only view of an fs volume at revision id.
func (r *Repo) Snapshot(ctx context.Context, volume, id string) (*Tree, error) { return nil, errStub }

// StagingDisk returns the writable head of a block volume.
func (r *Repo) StagingDisk(ctx context.Context, volume string) (*Disk, error) { return nil, errStub }

// RevisionDisk returns a block volume at revision id, read-only.
func (r *Repo) RevisionDisk(ctx context.Context, volume, id string) (*Disk, error) {
	return nil, errStub
}

// StatFS reports capacity for statfs(2).
func (r *Repo) StatFS(ctx context.Context) (StatFS, error) { return StatFS{}, errStub }

// ---- Tree: read-only fs view ----

// Lookup finds name in directory parent. Errors: ErrNotFound, ErrNotDir.
func (t *Tree) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	return Attr{}, errStub
}

// GetAttr returns the attributes of ino.
func (t *Tree) GetAttr(ctx context.Context, ino Ino) (Attr, error) { return Attr{}, errStub }

// ReadDir calls fn for the entries of directory ino in name order, starting
// after name `after` ("" = from the start), until fn returns false. "." and
// ".." are not included. Memory does not grow with directory size.
func (t *Tree) ReadDir(ctx context.Context, ino Ino, after string, fn func(Dirent) bool) error {
	return errStub
}

// Readlink returns a symlink's target.
func (t *Tree) Readlink(ctx context.Context, ino Ino) (string, error) { return "", errStub }

// ReadAt reads file data; holes read as zeros; short count only at EOF.
func (t *Tree) ReadAt(ctx context.Context, ino Ino, p []byte, off int64) (int, error) {
	return 0, errStub
}

// GetXattr returns one extended attribute. Errors: ErrNoXattr.
func (t *Tree) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	return nil, errStub
}

// ListXattr lists extended attribute names.
func (t *Tree) ListXattr(ctx context.Context, ino Ino) ([]string, error) { return nil, errStub }

// Extents reports data and hole runs of a file in [off, off+len), for
// SEEK_DATA/SEEK_HOLE and sparse copies.
func (t *Tree) Extents(ctx context.Context, ino Ino, off, length int64) ([]Extent, error) {
	return nil, errStub
}

// ---- Staging: writable fs head ----

// Tree returns the read view of the staging head (reads see every write
// that returned).
func (s *Staging) Tree() *Tree { return nil }

// Create makes a regular file, fifo, socket or device node (mode carries
// the type bits; rdev for devices). Errors: ErrExists, ErrNotFound (parent).
func (s *Staging) Create(ctx context.Context, parent Ino, name string, mode, uid, gid uint32, rdev uint64) (Attr, error) {
	return Attr{}, errStub
}

// Mkdir makes a directory.
func (s *Staging) Mkdir(ctx context.Context, parent Ino, name string, mode, uid, gid uint32) (Attr, error) {
	return Attr{}, errStub
}

// Symlink makes a symbolic link.
func (s *Staging) Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Attr, error) {
	return Attr{}, errStub
}

// Link makes a hard link to ino (not a directory).
func (s *Staging) Link(ctx context.Context, ino Ino, parent Ino, name string) (Attr, error) {
	return Attr{}, errStub
}

// Unlink removes a non-directory entry.
func (s *Staging) Unlink(ctx context.Context, parent Ino, name string) error { return errStub }

// Rmdir removes an empty directory. Errors: ErrNotEmpty.
func (s *Staging) Rmdir(ctx context.Context, parent Ino, name string) error { return errStub }

// Rename moves an entry, replacing a target as rename(2) does unless flags
// has RenameNoReplace; RenameExchange swaps the two.
func (s *Staging) Rename(ctx context.Context, parent Ino, name string, newParent Ino, newName string, flags uint32) error {
	return errStub
}

// SetAttr changes attributes; Size truncates or extends (sparse).
func (s *Staging) SetAttr(ctx context.Context, ino Ino, in SetAttr) (Attr, error) {
	return Attr{}, errStub
}

// WriteAt writes file data. It returns once the data is in the spool (not
// yet durable). Errors: ErrNoSpace.
func (s *Staging) WriteAt(ctx context.Context, ino Ino, p []byte, off int64) (int, error) {
	return 0, errStub
}

// SetXattr sets an extended attribute (flags as setxattr(2): XATTR_CREATE,
// XATTR_REPLACE).
func (s *Staging) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	return errStub
}

// RemoveXattr removes an extended attribute. Errors: ErrNoXattr.
func (s *Staging) RemoveXattr(ctx context.Context, ino Ino, name string) error { return errStub }

// FlushFile chunks and stores the buffered writes of ino (called on close);
// with durable, it also makes them survive a crash (fsync).
func (s *Staging) FlushFile(ctx context.Context, ino Ino, durable bool) error { return errStub }

// Sync makes every write that returned durable.
func (s *Staging) Sync(ctx context.Context) error { return errStub }

// ---- Disk: block volume view ----

// Size is the device size in bytes.
func (d *Disk) Size() int64 { return 0 }

// BlockSize is the volume's block size.
func (d *Disk) BlockSize() int { return 0 }

// ReadOnly reports whether writes fail with ErrReadOnly.
func (d *Disk) ReadOnly() bool { return true }

// ReadAt reads; holes read as zeros. Errors past the end: ErrInvalid.
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, errStub }

// WriteAt writes; returns once buffered (durable after Flush).
// Errors: ErrReadOnly, ErrInvalid (beyond the end), ErrNoSpace.
func (d *Disk) WriteAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, errStub }

// Zero makes [off, off+length) read as zeros; whole blocks become holes
// (TRIM and WRITE_ZEROES).
func (d *Disk) Zero(ctx context.Context, off, length int64) error { return errStub }

// Flush makes every write that returned durable.
func (d *Disk) Flush(ctx context.Context) error { return errStub }

// Extents reports data and hole runs in [off, off+length).
func (d *Disk) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	return nil, errStub
}

// Overlay returns a throwaway writable view over d: writes go to a private
// copy-on-write layer in the spool, dropped by Close; d never changes.
func (d *Disk) Overlay(ctx context.Context) (*Disk, error) { return nil, errStub }

// Close releases the view (and drops an overlay's writes).
func (d *Disk) Close() error { return errStub }

// ---- error types ----

// HasRevisionsError is returned by RemoveVolume without force.
type HasRevisionsError struct {
	Volume    string
	Revisions int
}

func (e *HasRevisionsError) Error() string { return "volume has revisions" }

// SpecError is a revision spec that matched nothing or several revisions.
type SpecError struct {
	Spec       string
	Candidates []Revision
	Ambiguous  bool
}

func (e *SpecError) Error() string { return "bad revision spec " + e.Spec }
