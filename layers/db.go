package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

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
func getVersion(r *rtx, vid volID, rk []byte, seq uint64) ([]byte, uint64, error) {
	// A version at exactly seq is the answer, and a point lookup is much
	// cheaper than an iterator: staging rewrites its own records often.
	if b, vseq, err := getExact(r, vid, rk, seq); vseq != 0 || !isNotFound(err) {
		return b, vseq, err
	}
	prefix := dataPrefix(vid, rk)
	return getBelow(r, prefix[:len(prefix):len(prefix)], seq)
}

// getBelow is getVersion's search for the newest version at or below seq
// with an iterator; prefix is dataPrefix(vid, rk).
func getBelow(r *rtx, prefix []byte, seq uint64) ([]byte, uint64, error) {
	it, release := r.versionIterator(prefix)
	defer release()
	it.Seek(be64(prefix, ^seq))
	return readVersion(it, prefix)
}

// versionIterator returns an iterator over every version of the records
// under prefix (a dataPrefix), and what gives it back.
func (r *rtx) versionIterator(prefix []byte) (*badger.Iterator, func()) {
	if r.p != nil {
		// Staging reads: a pooled iterator of the shared snapshot. Making
		// one costs more than the Seek (it opens every table's iterator),
		// and a no-change rsync after a commit does two of these per
		// LOOKUP.
		it := r.p.iterator()
		return it, func() { r.p.putIterator(it) }
	}
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = prefix
	// AllVersions: a staging record rewritten many times (a directory's
	// attributes as files are created in it) has many badger versions
	// until compaction, and a plain iterator's Seek skips all of them to
	// prefetch the next key. With AllVersions the first item is the newest
	// version and nothing more is read.
	opts.AllVersions = true
	it := r.txn.NewIterator(opts)
	return it, it.Close
}

// liveVersion is the payload of version vseq's stored value val (flag
// byte first); a tombstone is ErrNotFound.
func liveVersion(val []byte, vseq uint64) ([]byte, uint64, error) {
	if len(val) == 0 || val[0] == valTombstone {
		return nil, vseq, ErrNotFound
	}
	return val[1:], vseq, nil
}

// readVersion returns the record version it stands at (or the first one
// after it) under prefix, skipping what badger deleted; it is positioned
// at or before the newest version wanted.
func readVersion(it *badger.Iterator, prefix []byte) ([]byte, uint64, error) {
	var skip []byte
	for ; it.ValidForPrefix(prefix); it.Next() {
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
		return liveVersion(val, vseq)
	}
	return nil, 0, ErrNotFound
}

// cursorSteps is how many keys a versionCursor steps over before it seeks
// instead: a step costs a fraction of a microsecond, a seek tens.
const cursorSteps = 16

// versionCursor is getVersion for many records read in ascending key
// order, with one iterator. Neighbouring records (the attributes of a
// directory's entries, mostly numbered in creation order) are reached by
// stepping over the versions between them instead of a point lookup and
// a seek each.
type versionCursor struct {
	r       *rtx
	vid     volID
	it      *badger.Iterator
	release func()
	seeked  bool
}

// newVersionCursor returns a cursor over the records whose data keys
// start with prefix (a dataPrefix). Close it before the view ends.
func newVersionCursor(r *rtx, vid volID, prefix []byte) *versionCursor {
	it, release := r.versionIterator(prefix)
	return &versionCursor{r: r, vid: vid, it: it, release: release}
}

func (c *versionCursor) close() { c.release() }

// get returns the newest version at or below seq of record rk, which must
// sort after the records of earlier calls.
func (c *versionCursor) get(rk []byte, seq uint64) ([]byte, uint64, error) {
	// As getVersion: a version at exactly seq among the pending writes is
	// the answer (versioned records are only ever set there, never
	// deleted); otherwise the newest stored one at or below seq.
	key := verKey(c.vid, rk, seq)
	if val, ok, hit := c.r.pending(key); hit && ok {
		return liveVersion(val, seq)
	}
	c.position(key)
	return readVersion(c.it, key[:len(key)-8])
}

// position moves the iterator to the first key at or after target,
// stepping when it is close.
func (c *versionCursor) position(target []byte) {
	if c.seeked {
		for range cursorSteps {
			if !c.it.Valid() || bytes.Compare(c.it.Item().Key(), target) >= 0 {
				return
			}
			c.it.Next()
		}
	}
	c.it.Seek(target)
	c.seeked = true
}

// scanNames calls fn with the newest live version at or below seq of every
// named record (dirent, xattr) under prefix rk, in name order, starting
// after name `after`, until fn returns false. Pending writes (only ever at
// the staging seq) are merged in.
func scanNames(r *rtx, vid volID, rk []byte, seq uint64, after string, withValues bool, fn func(name string, val []byte) (bool, error)) error {
	prefix := dataPrefix(vid, rk)
	over := r.overNames(prefix, seq, after)
	// emit hands fn one record, skipping tombstones.
	emit := func(name string, val []byte) (bool, error) {
		if len(val) == 0 || val[0] == valTombstone {
			return true, nil
		}
		return fn(name, val[1:])
	}
	// drain emits the pending records that sort before name (all of
	// them for name == nil).
	drain := func(name []byte) (bool, error) {
		for len(over) > 0 && (name == nil || over[0].name < string(name)) {
			more, err := emit(over[0].name, over[0].val)
			over = over[1:]
			if err != nil || !more {
				return false, err
			}
		}
		return true, nil
	}
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = withValues
	opts.PrefetchSize = 64
	opts.Prefix = prefix
	it := r.txn.NewIterator(opts)
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
		if more, err := drain(name); err != nil || !more {
			return err
		}
		if len(over) > 0 && over[0].name == string(name) {
			continue // the pending version is newer: drain emits it next
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read record: %w", err)
		}
		if more, err := emit(string(name), val); err != nil || !more {
			return err
		}
	}
	_, err := drain(nil)
	return err
}

// writer collects the writes of one staging mutation at layer seq.
type writer struct {
	b   *batch
	vid volID
	seq uint64
}

func (w *writer) put(rk, val []byte) error {
	w.b.set(verKey(w.vid, rk, w.seq), val, false)
	w.b.set(touchedKey(w.vid, w.seq, rk), nil, false)
	return nil
}

func (w *writer) tombstone(rk []byte) error { return w.put(rk, []byte{valTombstone}) }

// setKey and delKey write keys outside the versioned records (markers,
// the inode counter) in the same batch.
func (w *writer) setKey(key, val []byte) { w.b.set(key, val, false) }
func (w *writer) delKey(key []byte)      { w.b.set(key, nil, true) }

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// freshMark says which inodes the staging layer created: every inode
// numbered ino or above was allocated by layer seq or later, so records
// keyed by it (attributes, extents, xattrs, and the entries of a
// directory) have no version below seq. Reads of such records at seq then
// need one point lookup instead of an iterator (badger iterators cost tens
// of microseconds, and rsync reads new inodes many times each), and reads
// below seq need none.
//
// The mark also remembers, for records staging has not written, which
// sealed layer holds the version staging sees (below): sealed layers
// never get new versions and prune keeps every version staging sees, so
// after a point lookup at seq misses, a second one at the remembered seq
// replaces the iterator. A repeated rsync reads every inode this way. A
// commit starts a new mark, and with it an empty memory.
type freshMark struct {
	seq uint64
	ino uint64
	// ts is a badger read timestamp taken after seq was stored: only a
	// transaction reading at or after it surely sees every version of
	// the sealed layers, so only such a one may fill below.
	ts uint64

	mu    sync.Mutex        // guards below
	below map[string]uint64 // record key -> seq of its newest version < seq
}

// maxBelow bounds freshMark.below (about 100 bytes an entry).
const maxBelow = 1 << 20

func (f *freshMark) lookBelow(rk []byte) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.below[string(rk)]
	return s, ok
}

func (f *freshMark) setBelow(rk []byte, vseq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.below) < maxBelow {
		f.below[string(rk)] = vseq
	}
}

// setFresh starts a new mark at the staging seq. The caller holds mu
// (nextIno) and has just stored seq; every inode allocated before is below
// nextIno.
func (v *volume) setFresh() {
	txn := v.r.db.NewTransaction(false)
	ts := txn.ReadTs()
	txn.Discard()
	v.fresh.Store(&freshMark{seq: v.seq.Load(), ino: v.nextIno, ts: ts, below: map[string]uint64{}})
}

// getKeyed is getVersion for a record keyed by inode ino (or, for
// directory entries, by the parent directory's inode).
func (v *volume) getKeyed(r *rtx, ino Ino, rk []byte, seq uint64) ([]byte, uint64, error) {
	f := v.fresh.Load()
	if f == nil || f.seq == 0 || seq > f.seq {
		return getVersion(r, v.id, rk, seq)
	}
	if uint64(ino) >= f.ino {
		if seq < f.seq {
			return nil, 0, ErrNotFound
		}
		return getExact(r, v.id, rk, seq)
	}
	if seq < f.seq {
		return getVersion(r, v.id, rk, seq)
	}
	b, vseq, err := getExact(r, v.id, rk, seq)
	if vseq != 0 || !isNotFound(err) {
		return b, vseq, err // staging's own version (or tombstone), or a read error
	}
	if at, ok := f.lookBelow(rk); ok {
		if b, vseq, err := getExact(r, v.id, rk, at); vseq != 0 || !isNotFound(err) {
			return b, vseq, err
		}
		// Not there after all: search, and remember afresh.
	}
	prefix := dataPrefix(v.id, rk)
	b, vseq, err = getBelow(r, prefix[:len(prefix):len(prefix)], seq)
	if vseq != 0 && vseq < seq && (err == nil || isNotFound(err)) && r.txn.ReadTs() >= f.ts {
		f.setBelow(rk, vseq)
	}
	return b, vseq, err
}

// getExact returns the version of rk written at exactly seq.
func getExact(r *rtx, vid volID, rk []byte, seq uint64) ([]byte, uint64, error) {
	val, ok, err := r.get(verKey(vid, rk, seq))
	if err != nil {
		return nil, 0, fmt.Errorf("read record: %w", err)
	}
	if !ok {
		return nil, 0, ErrNotFound
	}
	return liveVersion(val, seq)
}

// eachTouched calls fn, in key order, with the key and value (flag byte
// included) of every record layer seq of volume vid wrote whose type want
// accepts (nil: every type).
func eachTouched(ctx context.Context, txn *badger.Txn, vid volID, seq uint64, want func(rt byte) bool, fn func(rk, val []byte) error) error {
	prefix := touchedPrefix(vid, seq)
	it := keyIterator(txn, prefix)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rk := it.Item().KeyCopy(nil)[len(prefix):]
		if want != nil && !want(rk[0]) {
			continue
		}
		item, err := txn.Get(verKey(vid, rk, seq))
		if err != nil {
			return fmt.Errorf("read touched record: %w", err)
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read touched record: %w", err)
		}
		if err := fn(rk, val); err != nil {
			return err
		}
	}
	return nil
}

// holdsChunks says whether records of type rt refer to chunks.
func holdsChunks(rt byte) bool { return rt == recExtents || rt == recBlock }

// eachChunkRecord calls fn with every version of every extent-map and
// block record of every volume, in key order (so a record's versions come
// together, newest first): the volume, record key, version seq and value
// (flag byte included).
func eachChunkRecord(ctx context.Context, txn *badger.Txn, fn func(vid volID, rk []byte, seq uint64, val []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(pfxData)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := it.Item().Key()
		rk, seq := splitVersion(key)
		if !holdsChunks(rk[0]) {
			continue
		}
		var vid volID
		copy(vid[:], key[len(pfxData):])
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read record: %w", err)
		}
		if err := fn(vid, append([]byte(nil), rk...), seq, val); err != nil {
			return err
		}
	}
	return nil
}

// keyIterator iterates over the keys under prefix without prefetching
// values (most walks here look at keys, or at few values).
func keyIterator(txn *badger.Txn, prefix []byte) *badger.Iterator {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = prefix
	return txn.NewIterator(opts)
}

// keysWithPrefix returns a copy of every key under prefix, read in one
// view (for marker keys: few, small, and deleted one by one later).
func (r *Repo) keysWithPrefix(prefix string) ([][]byte, error) {
	var keys [][]byte
	err := r.db.View(func(txn *badger.Txn) error {
		it := keyIterator(txn, []byte(prefix))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, err
}
