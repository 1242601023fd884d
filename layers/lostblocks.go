package layers

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// pfxLostBlocks marks a block volume whose staging a crash reverted
// (l/b/<vid>): recovery found blocks written after the last FLUSH whose
// chunks the store never made durable, and let them fall back to the
// version below. The value is the number of such blocks and the time of
// the recovery that found them (8 bytes each, big-endian; Unix ns).
//
// Unlike a file, a disk image gives no cheap sign that the lost blocks
// were written again (a rerun copy need not touch every one of them, and
// tracking each block across writes costs memory in proportion to the
// loss), so the marker stays until a commit with AllowLost, which is the
// user saying that staging is what they want now. Commit refuses while it
// is there, as it does for files a crash lost (LostDataError).
const pfxLostBlocks = "l/b/"

func lostBlocksKey(vid volID) []byte { return append([]byte(pfxLostBlocks), vid[:]...) }

// pfxUnflushedBlocks marks a staging disk that holds acknowledged writes
// only in memory (l/u/<vid>): set when its buffer of dirty blocks stops
// being empty, deleted when a flush empties it. The value (lostBlocks's
// encoding, with no time) is a lower bound of the blocks buffered,
// rewritten each time the buffer doubles (so a 64 MiB buffer of 64 KiB
// blocks costs eleven small index writes between flushes).
// Recovery after a crash counts these with the blocks it reverts: the
// buffer died with the process, and without the marker nothing would
// tell that staging silently fell back to what it held before.
const pfxUnflushedBlocks = "l/u/"

func unflushedBlocksKey(vid volID) []byte { return append([]byte(pfxUnflushedBlocks), vid[:]...) }

// markUnflushed keeps the unflushed marker of a staging disk in step with
// its buffer; d.mu held. Badger writes the marker to its memory-mapped
// log before the write that set it returns, which a killed process does
// not lose; no sync, so a power failure may.
func (d *Disk) markUnflushed() error {
	n := int64(len(d.dirty))
	switch {
	case n == d.marked:
		return nil
	case n == 0:
		if err := update(d.v.r.db, func(txn *badger.Txn) error { return txn.Delete(unflushedBlocksKey(d.v.id)) }); err != nil {
			return fmt.Errorf("clear unflushed-blocks marker: %w", err)
		}
		d.marked = 0
		return nil
	case d.marked > 0 && n > d.marked && n < 2*d.marked:
		return nil // grown, but not doubled yet
	}
	l := lostBlocks{n: n} // no time: only the count is read back
	if err := update(d.v.r.db, func(txn *badger.Txn) error { return txn.Set(unflushedBlocksKey(d.v.id), l.encode()) }); err != nil {
		return fmt.Errorf("set unflushed-blocks marker: %w", err)
	}
	d.marked = n
	return nil
}

// unflushedBlocks returns what v's unflushed marker counts (0: none).
func (r *Repo) unflushedBlocks(v *volume) (int64, error) {
	var l lostBlocks
	err := r.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(unflushedBlocksKey(v.id))
		if err == badger.ErrKeyNotFound {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		l, err = decodeLostBlocks(b)
		return err
	})
	return l.n, err
}

// lostBlocks is what a block volume's marker says; the zero value: none.
type lostBlocks struct {
	n  int64     // blocks reverted, summed over crashes
	at time.Time // the latest recovery that reverted some
}

func (l lostBlocks) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(l.n))
	return binary.BigEndian.AppendUint64(b, uint64(l.at.UnixNano()))
}

func decodeLostBlocks(b []byte) (lostBlocks, error) {
	if len(b) != 16 {
		return lostBlocks{}, fmt.Errorf("lost-blocks marker of %d bytes, want 16", len(b))
	}
	return lostBlocks{n: int64(binary.BigEndian.Uint64(b)), at: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))).UTC()}, nil
}

// noteLostBlocks adds n lost blocks to v's marker, found now, and drops
// the unflushed marker they were partly counted from in the same
// transaction, so no crash counts the buffered blocks twice. It runs
// before recovery reverts the blocks whose chunks are gone: a crash in
// between counts those again, which overstates the loss but never hides
// it.
func (r *Repo) noteLostBlocks(v *volume, n int64) error {
	return update(r.db, func(txn *badger.Txn) error {
		if err := txn.Delete(unflushedBlocksKey(v.id)); err != nil {
			return err
		}
		l := lostBlocks{}
		item, err := txn.Get(lostBlocksKey(v.id))
		switch {
		case err == nil:
			b, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if l, err = decodeLostBlocks(b); err != nil {
				return err
			}
		case err != badger.ErrKeyNotFound:
			return err
		}
		l.n += n
		l.at = r.now().UTC()
		return txn.Set(lostBlocksKey(v.id), l.encode())
	})
}

// loadLostBlocks reads the lost-blocks markers into their volumes;
// markers of removed volumes go, and so do unflushed markers: recovery
// has counted them, and no staging disk of this process buffers anything
// yet.
func (r *Repo) loadLostBlocks() error {
	stale, err := r.keysWithPrefix(pfxUnflushedBlocks)
	if err != nil {
		return fmt.Errorf("load lost-blocks markers: %w", err)
	}
	if err := r.deleteKeys(stale); err != nil {
		return fmt.Errorf("load lost-blocks markers: %w", err)
	}
	return r.loadVolumeMarkers(pfxLostBlocks, func(v *volume, val []byte) (bool, error) {
		l, err := decodeLostBlocks(val)
		if err != nil {
			return false, fmt.Errorf("volume %s: %w", v.rec.Name, err)
		}
		v.mu.Lock()
		v.lostBlocks = l
		v.mu.Unlock()
		return true, nil
	})
}

// loadVolumeMarkers hands every per-volume marker under prefix (prefix,
// volume id) to load with its volume; markers of removed volumes, malformed
// ones and those load does not keep are deleted.
func (r *Repo) loadVolumeMarkers(prefix string, load func(v *volume, val []byte) (keep bool, err error)) error {
	byID := r.volumesByID()
	var stale [][]byte
	err := r.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			var vid volID
			if len(k) != len(prefix)+len(vid) {
				stale = append(stale, k)
				continue
			}
			copy(vid[:], k[len(prefix):])
			v := byID[vid]
			if v == nil {
				stale = append(stale, k)
				continue
			}
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if keep, err := load(v, b); err != nil {
				return err
			} else if !keep {
				stale = append(stale, k)
			}
		}
		return nil
	})
	if err == nil {
		err = r.deleteKeys(stale)
	}
	if err != nil {
		return fmt.Errorf("load markers %s: %w", prefix, err)
	}
	return nil
}
