// Package index opens the store's badger database and encodes the records
// the store keeps in it.
//
// Keys (prefixes agreed in contracts.md; layers owns "l/"):
//
//	c/<chunk id, 32 bytes>   → Chunk: segment, offset, length, kind, refs
//	s/<segment id, 8 bytes>  → Segment: segment length, K, M, chunk count
//	x/next-segment           → the next segment id to allocate
//
// Segment ids are big-endian in keys so iteration runs in id order. The
// database is encrypted at rest with the key the caller passes (derived
// from the master key); badger requires an index cache when encryption is
// on, so Open always sets one. Badger's own logging goes to the caller's
// slog.Logger, its INFO lines at debug level.
//
// Badger wraps errors without %w, so callers compare badger sentinels
// (badger.ErrKeyNotFound, badger.ErrTxnTooBig) right at the call.
package index
