package layers

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// update runs fn in a read-write transaction, retrying on conflicts. fn
// must be safe to run more than once. Badger's own errors are checked at
// the call because its wrapping drops error chains.
func update(db *badger.DB, fn func(txn *badger.Txn) error) error {
	for attempt := 0; ; attempt++ {
		err := db.Update(fn)
		if err == badger.ErrConflict && attempt < 16 {
			continue
		}
		return err
	}
}

// getVersion returns the payload of the newest version of record rk at or
// below seq, and the seq of that version. A tombstone or no version at all
// is ErrNotFound.
func getVersion(txn *badger.Txn, vid volID, rk []byte, seq uint64) ([]byte, uint64, error) {
	prefix := dataPrefix(vid, rk)
	// A version at exactly seq is the answer, and a point lookup is much
	// cheaper than an iterator: staging rewrites its own records often.
	if item, err := txn.Get(be64(prefix, ^seq)); err == nil {
		val, err := item.ValueCopy(nil)
		if err != nil {
			return nil, 0, fmt.Errorf("read record: %w", err)
		}
		if len(val) == 0 || val[0] == valTombstone {
			return nil, seq, ErrNotFound
		}
		return val[1:], seq, nil
	} else if err != badger.ErrKeyNotFound {
		return nil, 0, fmt.Errorf("read record: %w", err)
	}
	prefix = prefix[:len(prefix):len(prefix)] // be64 above must not have shared its array
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = prefix
	// AllVersions: a staging record rewritten many times (a directory's
	// attributes as files are created in it) has many badger versions
	// until compaction, and a plain iterator's Seek skips all of them to
	// prefetch the next key. With AllVersions the first item is the newest
	// version and nothing more is read.
	opts.AllVersions = true
	it := txn.NewIterator(opts)
	defer it.Close()
	var skip []byte
	for it.Seek(be64(prefix, ^seq)); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		key := item.Key()
		if skip != nil && string(key) == string(skip) {
			continue
		}
		if item.IsDeletedOrExpired() {
			skip = item.KeyCopy(nil) // removed from badger: older versions are stale too
			continue
		}
		if len(key) != len(prefix)+8 {
			continue // a longer record key sharing the prefix; cannot happen with our encodings
		}
		_, vseq := splitVersion(key)
		val, err := item.ValueCopy(nil)
		if err != nil {
			return nil, 0, fmt.Errorf("read record: %w", err)
		}
		if len(val) == 0 || val[0] == valTombstone {
			return nil, vseq, ErrNotFound
		}
		return val[1:], vseq, nil
	}
	return nil, 0, ErrNotFound
}

// scanNames calls fn with the newest live version at or below seq of every
// named record (dirent, xattr) under prefix rk, in name order, starting
// after name `after`, until fn returns false.
func scanNames(txn *badger.Txn, vid volID, rk []byte, seq uint64, after string, withValues bool, fn func(name string, val []byte) (bool, error)) error {
	prefix := dataPrefix(vid, rk)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = withValues
	opts.PrefetchSize = 64
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	start := prefix
	if after != "" {
		start = append(append(append([]byte{}, prefix...), after...), 1)
	}
	var last []byte
	haveLast := false
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		key := item.Key()
		if len(key) < len(prefix)+9 {
			continue
		}
		name := key[len(prefix) : len(key)-9]
		_, vseq := splitVersion(key)
		if haveLast && string(name) == string(last) {
			continue
		}
		if vseq > seq {
			continue
		}
		last = append(last[:0], name...)
		haveLast = true
		val, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read record: %w", err)
		}
		if len(val) == 0 || val[0] == valTombstone {
			continue
		}
		more, err := fn(string(name), val[1:])
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// writer collects the writes of one staging mutation at layer seq.
type writer struct {
	txn *badger.Txn
	vid volID
	seq uint64
}

func (w *writer) put(rk, val []byte) error {
	if err := w.txn.Set(verKey(w.vid, rk, w.seq), val); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := w.txn.Set(touchedKey(w.vid, w.seq, rk), nil); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

func (w *writer) tombstone(rk []byte) error { return w.put(rk, []byte{valTombstone}) }

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// freshMark says which inodes the staging layer created: every inode
// numbered ino or above was allocated by layer seq or later, so records
// keyed by it (attributes, extents, xattrs, and the entries of a
// directory) have no version below seq. Reads of such records at seq then
// need one point lookup instead of an iterator (badger iterators cost tens
// of microseconds, and rsync reads new inodes many times each), and reads
// below seq need none.
type freshMark struct {
	seq uint64
	ino uint64
}

// setFresh starts a new mark at the staging seq. The caller holds mu
// (nextIno) and has just stored seq; every inode allocated before is below
// nextIno.
func (v *volume) setFresh() {
	v.fresh.Store(&freshMark{seq: v.seq.Load(), ino: v.nextIno})
}

// getKeyed is getVersion for a record keyed by inode ino (or, for
// directory entries, by the parent directory's inode).
func (v *volume) getKeyed(txn *badger.Txn, ino Ino, rk []byte, seq uint64) ([]byte, uint64, error) {
	if f := v.fresh.Load(); f != nil && f.seq != 0 && uint64(ino) >= f.ino {
		switch {
		case seq < f.seq:
			return nil, 0, ErrNotFound
		case seq == f.seq:
			return getExact(txn, v.id, rk, seq)
		}
	}
	return getVersion(txn, v.id, rk, seq)
}

// getExact returns the version of rk written at exactly seq.
func getExact(txn *badger.Txn, vid volID, rk []byte, seq uint64) ([]byte, uint64, error) {
	item, err := txn.Get(be64(dataPrefix(vid, rk), ^seq))
	if err == badger.ErrKeyNotFound {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read record: %w", err)
	}
	val, err := item.ValueCopy(nil)
	if err != nil {
		return nil, 0, fmt.Errorf("read record: %w", err)
	}
	if len(val) == 0 || val[0] == valTombstone {
		return nil, seq, ErrNotFound
	}
	return val[1:], seq, nil
}
