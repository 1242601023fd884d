// Package store is strata's extent store: it keeps chunks (pieces of file
// or block data, and layers' metadata records) deduplicated, compressed,
// encrypted and Reed–Solomon coded across K+M shard directories, indexed in
// an encrypted badger database.
//
// # Data path
//
// Put hashes the plaintext to its id (keyed BLAKE3, store/crypt) and
// deduplicates by id, adding a reference. New chunks are sealed
// (compressed if it pays, AES-GCM with the id as associated data) by a
// pool of workers and appended to the open segment, whose bytes go to an
// unlinked scratch file (segData: the page cache holds a filling segment,
// not the server's heap); Put returns as soon as the chunk is queued. A
// full segment (Config.SegmentSize, 16 MiB by default) goes to a
// background sealer that appends an encrypted trailer listing its chunks,
// splits it into K data + M parity shard files (store/erasure; data shards
// hold the segment bytes verbatim, every 64 KiB block checksummed) and
// writes each to its shard dir (renamed into place; evicted from the page
// cache once fsynced, see store/shard). The data shards pass one at a time
// through one region buffer, which also feeds the parity, so a sealer's
// memory is one data shard plus the M parity files (12 MiB at 4+2). The
// scratch file is then closed and, behind the sealer, the files are
// fsynced, the dirs fsynced, the chunk and segment records committed to
// the index and the journal dropped; until then Get reads those chunks
// from the shard files. Directory and index fsyncs are group-committed. At
// most two handed-off segments wait for their shard files to be written
// (beyond that appends wait), while up to four wait for fsync.
//
// Seal is Flush that seals the open segment instead of journaling it:
// after it, everything Put before is parity-protected (cmd/strata calls it
// after each commit; the small segments this leaves are merged by GC).
//
// Get reads the sealed bytes straight from the data shard(s) and opens
// them; AEAD authentication is the check. If a shard is missing or the
// chunk does not authenticate, every shard's covering blocks are read and
// checked against their checksums, bad blocks are reconstructed from any K
// good ones, and the damage is logged (once per segment) for scrub to
// repair. If every block checks but the chunk still does not authenticate
// (a shard altered together with its checksums), the range is rebuilt
// without each of its data shards in turn. With more than M bad shards in
// a block row Get returns a
// *DamageError naming segment and chunk; damaged bytes are never returned.
//
// # Durability
//
// Flush waits for the chunks queued and the segments handed off before it
// was called (not for later ones, so a steady stream of Puts from other
// goroutines cannot starve it), appends the open segment's new chunks and
// changed reference counts to its journal (REPO/journal/<segment>) and
// fsyncs it, then commits pending reference changes of indexed chunks to
// the index and syncs it. A kill -9 after
// Flush returns loses nothing: Open replays and seals leftover journals.
// Sealing makes shards durable (file and dir fsync) before index entries
// point at them (one transaction per segment: at most 8192 chunks each),
// and the segment record goes last; a crash at any point leaves at worst
// orphan (possibly torn) shard files of an unindexed segment, which
// Scrub reports and GC deletes, or which a journal replay rewrites. A crash while a
// Flush is writing may leave chunks whose Put was never acknowledged with
// one reference; they stay until an index rebuild and recount by layers.
//
// # Degraded operation
//
// Like a RAID with a dead disk, the store keeps working with up to M
// shard dirs missing or unusable (not a directory, not writable): Open
// logs a warning naming them and Stats.MissingShardDirs lists them. Reads
// reconstruct from the other shards. A segment write needs K+1 shards
// (data plus one parity) or, with dirs missing, every present dir (at
// least K); other failed shard writes are tolerated within that and
// logged, except a full disk, which fails the write (it is retried once
// space is freed). Scrub reports every segment lacking a shard as damaged;
// Scrub with Repair first recreates missing dirs (os.Mkdir of the last
// element only, so nothing is written where a disk is not mounted), then
// rewrites the shards from parity. With more than M dirs missing Open
// fails with *ShardDirError.
//
// Options.Describe lets the caller say what a chunk holds, so
// DamageError.What and SegmentDamage.Affected name the files or volumes
// hit by damage beyond parity.
//
// # References and garbage
//
// Every Put adds a reference, Release drops one; both become durable at
// Flush. A chunk with no references is garbage. GC deletes segments with
// only garbage, copies the live chunks out of segments whose garbage share
// exceeds GCOptions.MaxUnused and then deletes them, merges small segments
// (each short session that flushes leaves one), and deletes orphans.
// New data is durable before old index entries are removed, and those go
// before shard files. Chunks that were Put but are not yet referenced by
// committed metadata still hold their Put reference, so GC never frees
// in-flight data.
//
// # Index rebuild
//
// RebuildIndex reconstructs the chunk and segment records from the shards
// alone, via each segment's encrypted trailer. Reference counts cannot be
// recovered from shards: every chunk gets one reference, and layers must
// recount references from its own records afterwards.
//
// # Concurrency
//
// A Store is safe for concurrent use. One process opens a repository at a
// time: Open takes REPO/lock (flock, with the PID inside for messages) and
// fails with *LockedError otherwise. Flush calls are serialized; Scrub, GC
// and RebuildIndex are serialized with each other but run alongside Put
// and Get.
//
// # Errors
//
// ErrNotFound for unknown ids; *DamageError when parity cannot cover the
// damage; *ShardDirError at Open for more than M missing or unusable
// shard dirs;
// *LockedError for a second opener; a full filesystem gives errors that
// match both ErrNoSpace and syscall.ENOSPC, after which the store stays
// consistent: the failed segment stays in memory and is written again by
// the next Put or Flush once space is freed. Data Puts fail that way
// already when only a reserve of two segments is left (room.go): metadata
// and GC use it, so a repository full of backups can still be pruned.
package store
