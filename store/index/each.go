package index

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// EachChunk calls fn for every chunk record in txn, in id order, and stops
// at the first error fn returns. A record that does not parse is an error
// naming the chunk.
func EachChunk(txn *badger.Txn, fn func(id chunk.ID, c Chunk) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(ChunkPrefix), PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id, ok := ChunkIDFromKey(it.Item().Key())
		if !ok {
			continue
		}
		var c Chunk
		if err := it.Item().Value(func(v []byte) (err error) {
			c, err = ParseChunk(v)
			return err
		}); err != nil {
			return fmt.Errorf("chunk %s: %w", id.Short(), err)
		}
		if err := fn(id, c); err != nil {
			return err
		}
	}
	return nil
}

// EachSegment calls fn for every segment record in txn, in id order, and
// stops at the first error fn returns.
func EachSegment(txn *badger.Txn, fn func(id uint64, s Segment) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(SegmentPrefix), PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id, ok := SegmentIDFromKey(it.Item().Key())
		if !ok {
			continue
		}
		var s Segment
		if err := it.Item().Value(func(v []byte) (err error) {
			s, err = ParseSegment(v)
			return err
		}); err != nil {
			return fmt.Errorf("segment %016x: %w", id, err)
		}
		if err := fn(id, s); err != nil {
			return err
		}
	}
	return nil
}
