// Package layers is strata's versioned metadata model: volumes, their
// staging heads, layers and revisions, revision specs, commit and diff.
// It stores records in the repository's badger DB (keys under "l/") and
// file and block data as chunks in a ChunkStore (*store.Store).
//
// # Model
//
// Every volume has a sequence of layers numbered 1, 2, ... The newest
// layer is staging, the writable head; commit seals it as a revision and
// opens the next one. A record (an inode's attributes, a directory entry,
// a file's extent map, an xattr, a block) is written as a new version
// tagged with the layer seq that wrote it; rewriting it in the same layer
// replaces that version. Reading at revision R takes, for each record, the
// newest version with seq <= R; a tombstone version means "deleted". So a
// revision is its sealed layer plus everything below it, staging reads at
// its own seq, and no revision changes after its layer is sealed.
//
// fs volumes: inode numbers come from a per-volume counter and stay stable
// across revisions; the root is RootIno; hard links share an inode (nlink
// in its attributes); a directory's attributes record its parent. Block
// volumes: one record per block index holding the chunk id; holes have no
// record or a tombstone.
//
// # Key layout
//
//	l/v/<name>                    volume record (JSON: id, type, size, block size, created)
//	l/n/<vid>                     volume state: inode numbers reserved so far, staging seq
//	l/r/<vid><seq>                revision record (JSON), seq = the sealed layer
//	l/d/<vid><rk><^seq>           version of record rk written by layer seq
//	l/t/<vid><seq><rk>            rk was written by layer seq ("touched")
//	l/p/<vid><seq>                a removed revision whose layer still holds visible versions
//	l/w/<vid><ino>                the inode's attributes run ahead of its stored data
//	l/o/<vid><ino>                unlinked inode kept for open handles (Hold)
//	l/x/clean                     present while closed cleanly
//
// vid is the volume's random 8-byte id. A record key rk is a type byte and
// the record's own key: 'a' ino (attributes), 'd' parent ino + name + NUL
// (directory entry), 'e' ino (extent map), 'x' ino + name + NUL (xattr),
// 'b' block index. Integers are big-endian; ^seq is the complement, so the
// versions of one record sort newest first and one Seek to rk+^R finds
// the version visible at R however many layers exist. Names sort in byte
// order, so ReadDir streams a directory with one iterator and resumes
// after a name with one Seek. Values start with a flag byte: 0 tombstone,
// 1 live.
//
// Reads at the staging seq avoid iterators where they can: records of an
// inode staging created (numbered at or above the counter's value when
// the layer opened) can only have a version at exactly that seq, and for
// other records staging remembers, until the next commit, which sealed
// layer holds the version it sees (sealed layers never change and prune
// keeps what staging sees), so a repeated lookup is two point reads.
//
// The touched index lets commit visit exactly the records its layer wrote:
// it derives the revision's size and inode count from the previous
// revision plus those records' changes, and packs them into meta chunks
// (chunk.KindMeta, magic "strata-layer-v1") so the layer can be rebuilt
// from the shards alone; a further meta chunk ("strata-revision-v1")
// carries the volume and revision records.
//
// # Removing revisions (prune)
//
// RemoveRevision deletes a revision record and then, using the touched
// index of its layer (and of layers of revisions removed earlier, down to
// the previous surviving revision), every version no surviving revision
// and not staging can see: a version written by layer L is seen by reading
// point p when L <= p < the seq of the record's next version. Versions
// still seen stay where they are; their layer's meta chunks stay too, and
// a "strata-pruned-v1" meta chunk tells a rebuild that the revision is
// gone. Work is proportional to what those layers changed.
//
// # Chunk references
//
// Every live extent-map or block version holds one store reference per
// chunk occurrence; a revision's record holds its meta chunks. Replacing or
// deleting a version written by the staging layer releases its chunks
// (no revision can see it); versions of sealed layers keep theirs until
// RemoveRevision deletes them. RemoveVolume releases everything the volume
// held. References enumerates them all, for a rebuilt store index.
//
// An open staging file holds one reference per chunk it keeps (those of
// its base, taken at its first write, and those it stored early): its
// flush hands them to the new extent map, dropping it unflushed releases
// them. A crash in between leaves them counted with nothing naming them,
// which costs space, never data, until references are recounted (a
// prune that finds removals to finish, or an index rebuild).
//
// # Staging writes
//
// fs staging writes land in a per-inode buffer: in memory for small files
// (within a repository-wide budget), else a sparse spool file under
// Options.SpoolDir. The first write to a file with content does not copy
// it in: the open file takes a store reference to each chunk of its
// extent map (ChunkStore.Retain) and reads them where the spool has
// nothing; a write takes back into the spool only the chunks it overlaps
// (early.go). A file that grows large stores its spooled data early
// (same file). FlushFile (FUSE calls it on close) queues the file for a
// bounded pool of background workers that cut the spool's data with the
// content-defined chunker (holes in the spool stay holes; all-zero chunks
// are never stored), Put the chunks, write the extent map (the chunks
// kept plus the new ones) and attributes and release the replaced extent
// map if staging wrote it. Reads, Extents and GetAttr of a dirty file see its
// buffer. Block staging keeps whole dirty blocks in a bounded cache (one
// read-modify-write per block, not per request); flushing stores them,
// all-zero blocks as holes.
//
// An inode whose last link goes while fs holds it open (Staging.Hold)
// stays, with nlink 0 and no name, until the last Unhold; Close drops such
// inodes, and an "l/o" marker written with the unlink lets the Open after
// a crash drop them too.
//
// Limits: a file's extent map is one record (about 44 bytes per chunk, so
// 4 MB for a 100 GB file rewritten on every flush), and the first write
// to a file with content reads that record and takes a reference per
// chunk (about 100k lookups in the store's index for a 100 GB file, far
// less than reading it); Revision.Added counts bytes before
// compression and, for the staging period under way, is kept in memory.
//
// # Concurrency
//
// Repo, Tree, Staging and Disk are safe for concurrent use. Per volume:
// commitMu is held shared by every staging write and exclusively by Commit,
// so a write that returned before Commit is in the revision and one that
// starts after is not; mu serializes metadata changes of the staging
// layer and guards the inode counter. Per dirty file, dataMu covers its
// buffer and a separate short mutex its size and times, so GetAttr and
// SetAttr of a file being chunked do not wait. Lock order: commitMu, file
// dataMu, volume mu, pending mu. Revision views use badger snapshots.
//
// Staging metadata changes do not go to badger one by one (pending.go): a
// change reads under the volume's pending writes and, if it succeeds,
// lands in them whole; a background flusher writes pending to badger in
// one transaction per batch (every 50 ms, or when a batch fills). Staging
// reads share one read-only badger snapshot, renewed whenever a batch
// leaves memory, and hold pending's lock shared while they read, so no
// batch leaves memory under them. A flush records a file before it
// forgets it, so a staging read sees the record or the open file.
//
// # Durability
//
// Metadata changes are not fsynced one by one: rsync creates tens of
// thousands of files. Durability points are FlushFile(durable=true) and
// Sync (chunk buffered data, store Flush, pending metadata to badger,
// badger Sync), Disk.Flush, and Commit (flush everything, store Flush,
// write the revision, badger Sync). After a crash, staging comes back as
// of its last durable point plus some prefix of the changes since (each
// change atomically: a pending batch is one badger transaction, applied
// in order); revisions are never touched. Chunks a change stops using are
// released only once the change is in badger. Spool files left by a crash are deleted by Open.
// Staging records can reach the index before the store makes their
// chunks durable; after an unclean shutdown (no "l/x/clean" marker, which
// Close writes and Open removes) Open checks the chunks of the staging
// layer's extent maps and blocks (Has, when the store has it): extents
// whose chunk is gone become holes, blocks fall back to the version
// below, so staging never answers EIO for data nobody was promised.
//
// A file's attribute record can also run ahead of its data: rsync sets
// the mtime (SetAttr) of a file whose writes are still buffered. Such a
// record is written together with an "l/w" marker, which the transaction
// recording the file's extent map deletes. Open (after any shutdown)
// gives every marked inode, and every inode whose staging extents lost
// chunks, the Unix epoch as mtime (size kept, missing data reads as
// holes) and logs how many: a file that lost data never looks up to date
// to a size-and-mtime comparison, so the next rsync sends it again.
// Replacing an extent map or block version that staging itself wrote
// (and an fsync or FLUSH may have made durable) first flushes the store,
// so a crash leaves the old version or the new one, never a hole.
//
// # Errors
//
// Callers branch on the sentinels in api.go (ErrNotFound, ErrExists, ...,
// ErrNoSpace for a full spool) with errors.Is; they are wrapped with the
// operation and object. *HasRevisionsError, *SpecError, *TagError and
// *AgeRangeError carry details.
// Badger's errors are checked at the call, where its wrapping would
// otherwise drop them.
package layers
