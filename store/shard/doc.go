// Package shard stores shard files: the per-failure-domain pieces of
// erasure-coded segments. A Backend is one shard directory (later also an
// object store bucket); the store keeps one Backend per shard index.
//
// Invariants every Backend keeps (checked by shardtest.Run):
//   - Put is atomic and durable: once it returns nil, a crash leaves the
//     whole object under its name; before that, no object or the old one.
//   - GetRange reads exactly len(p) bytes or fails: ErrNotFound for a
//     missing object, io.ErrUnexpectedEOF for a range past its end.
//   - Delete of a missing object succeeds (GC retries after crashes).
//
// Backends that can defer the per-directory part of durability implement
// Batcher, so a writer of several objects pays one directory sync for all.
//
// Local drops each file it has fsynced from the page cache
// (FADV_DONTNEED): shard files are written once and seldom read soon after,
// and a cache that grows with everything written cost the development VM
// half its sustained write throughput (see dropCache).
//
// Backends are safe for concurrent use. Errors from the operating system
// (for example syscall.ENOSPC) stay in the chain, so errors.Is works.
package shard
