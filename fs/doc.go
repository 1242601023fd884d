// Package fs serves strata volumes over FUSE (go-fuse v2): the writable
// staging head of an fs volume (MountStaging), a read-only revision
// (MountTree), a block volume as one file disk.img (MountDisk), and every
// volume and revision of a repository at once (MountBrowse).
//
// # Why the raw API
//
// The filesystems implement go-fuse's fuse.RawFileSystem directly instead
// of its node-tree fs package. layers is already inode-numbered, holds all
// state (attributes, entries, extents) and keeps inode numbers stable, so
// a FUSE node id is simply the layers inode number (root 1 ==
// layers.RootIno). The node API would keep a second in-memory tree of
// every inode the kernel knows, with its own locking and lookup counts,
// which for an rsync of 60k files is memory and lock traffic for nothing;
// Forget is a no-op here. Browse mounts put a view number above bit 40 of
// the node id (view 0 = the synthetic VOLUME/, tags/, latest nodes).
//
// # Invariants
//
//   - Node ids are never reused for a different object: layers inode
//     numbers are stable, browse view numbers are never recycled.
//   - File handles carry no state (reads and writes go by inode); only
//     open directories hold a cursor: the offset and the last name
//     returned, resumed through Tree.ReadDir's `after`, so listing a
//     directory of any size keeps O(1) state per handle.
//   - Staging: close(2) (FLUSH) calls Staging.FlushFile(ino, false), which
//     starts chunking; fsync calls FlushFile(ino, true); unmount (ours or
//     an external umount) calls Staging.Sync / Disk.Flush.
//   - Revisions are mounted MS_RDONLY, so the kernel refuses writes with
//     EROFS; the handlers refuse them too.
//
// # Caching
//
// Staging: entry and attribute timeouts of one hour, negative entries one
// second (we are the only writer and every change passes through the
// kernel, which updates its own dentries and invalidates attributes on
// create, write and rename; a renamed file still costs one GETATTR on
// its next stat, as the kernel invalidates its ctime), FOPEN_NOFLUSH on
// read-only opens, no writeback cache (the kernel would then own size and
// mtime, a commit could miss pages still dirty in it, and rsync measured
// more requests per file with it, not fewer), no keep_cache. A staging
// mount also fills the kernel's cache ahead of a reader (warm.go): a
// LOOKUP in a directory not listed since the kernel forgot it starts a
// background READDIRPLUS listing of it and the directories below, so a
// no-change rsync after a fresh mount finds its lstat answers in the
// kernel instead of waiting on one LOOKUP per file. Symlink targets are
// cached on every mount (CAP_CACHE_SYMLINKS; a target never changes).
// Revisions and
// browse views: one hour for entries, attributes and negative entries,
// FOPEN_CACHE_DIR on directories, and zero-message opens for files: OPEN
// and FLUSH answer ENOSYS, so the kernel stops sending OPEN, FLUSH and
// RELEASE (keep_cache is then its default). Listing a directory of a
// revision (READDIRPLUS) queues its small files for the prefetcher, which
// reads them in the background and stores them in the kernel's page cache
// (FUSE_NOTIFY_STORE), so a cold `tar` mostly reads small files without a
// READ round trip. All mounts use 1 MiB requests (MaxWrite)
// and 1 MiB readahead, set through the mount's bdi in sysfs because FUSE
// INIT cannot go above the kernel's 128 KiB default. READDIRPLUS reads a
// reply's worth of entries and then their attributes in one pass
// (layers.Tree.GetAttrs). READ replies are plain bytes, so splicing is
// off: go-fuse would otherwise stage each reply's header in a pipe first.
//
// # Concurrency
//
// go-fuse calls the handlers from many goroutines; layers is safe for
// concurrent use and every mutable field here is guarded by a mutex named
// in its struct. A FUSE interrupt cancels the request's context
// (context.Canceled maps to EINTR).
//
// # Errors
//
// Errno maps errors to errno with errors.Is over layers' sentinels (go-fuse's
// ToStatus would turn a wrapped error into ENOSYS); anything unknown is EIO,
// logged with its cause through Options.Logger, rate-limited.
//
// # Not supported
//
// File locks are local to the kernel (no EnableLocks); O_TMPFILE (layers
// has no anonymous inodes); mmap writes work through the page cache like
// write(2). An unlinked file that is still open stays readable and
// writable until its last handle closes (layers' Hold/Unhold); a crash
// or server stop meanwhile drops it.
package fs
