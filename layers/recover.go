package layers

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// keyClean is present while the layers are closed cleanly; Open removes
// it, Close writes it back.
const keyClean = "l/x/clean"

// pfxUnflushed marks an inode whose attribute record (size, mtime) was
// written while its data was still only buffered: l/w/<vid><ino>. It is
// set in the transaction that writes such a record and deleted in the one
// that writes the file's extent map, so after a crash it names exactly the
// files whose record claims data the index does not have.
const pfxUnflushed = "l/w/"

func unflushedKey(vid volID, ino Ino) []byte {
	return be64(append([]byte(pfxUnflushed), vid[:]...), uint64(ino))
}

// markerVolume splits a marker key (prefix, volume id, inode, as
// unflushedKey, lostKey and orphanKey build them) into its volume among
// byID and its inode; the volume is nil for a malformed key or a volume
// removed since.
func markerVolume(k []byte, pfx string, byID map[volID]*volume) (*volume, Ino) {
	if len(k) != len(pfx)+16 {
		return nil, 0
	}
	var vid volID
	copy(vid[:], k[len(pfx):])
	return byID[vid], Ino(binary.BigEndian.Uint64(k[len(pfx)+8:]))
}

// pfxLost marks a file whose data a crash lost (l/l/<vid><ino>), from the
// recovery that found it until its data is written again or it goes; a
// commit refuses while a volume has any (LostDataError).
const pfxLost = "l/l/"

func lostKey(vid volID, ino Ino) []byte {
	return be64(append([]byte(pfxLost), vid[:]...), uint64(ino))
}

// forgetLost drops ino's lost-data marker, if it has one, with m; v.mu held.
func (m *mutation) forgetLost(ino Ino) {
	if !m.v.lost[ino] {
		return
	}
	m.delKey(lostKey(m.vid, ino))
	m.applied = append(m.applied, func() { delete(m.v.lost, ino) })
}

// loadLost reads the lost-data markers into their volumes; markers of
// removed volumes or files go (a file that is gone lost nothing a commit
// could keep).
func (r *Repo) loadLost() error {
	byID := r.volumesByID()
	keys, err := r.keysWithPrefix(pfxLost)
	if err != nil {
		return fmt.Errorf("load lost-data markers: %w", err)
	}
	for _, k := range keys {
		v, ino := markerVolume(k, pfxLost, byID)
		exists := false
		if v != nil {
			err := r.db.View(func(txn *badger.Txn) error {
				n, _, err := v.getInode(sealed(txn), ino, v.seq.Load())
				if isNotFound(err) {
					return nil
				}
				exists = err == nil && isReg(n.Mode) && n.Nlink > 0
				return err
			})
			if err != nil {
				return fmt.Errorf("load lost-data markers: %w", err)
			}
		}
		if !exists {
			if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
				return fmt.Errorf("load lost-data markers: %w", err)
			}
			continue
		}
		v.mu.Lock()
		v.lost[ino] = true
		v.mu.Unlock()
	}
	return nil
}

// pfxOrphan marks an inode whose last link went while a handle held it
// (l/o/<vid><ino>): holds live in memory, so after a crash Open drops it.
const pfxOrphan = "l/o/"

func orphanKey(vid volID, ino Ino) []byte {
	return be64(append([]byte(pfxOrphan), vid[:]...), uint64(ino))
}

// dropCrashOrphans drops the inodes a crash left unlinked but kept for
// handles that are gone now; markers of removed volumes or relinked
// inodes just go.
func (r *Repo) dropCrashOrphans() error {
	byID := r.volumesByID()
	keys, err := r.keysWithPrefix(pfxOrphan)
	if err != nil {
		return fmt.Errorf("drop orphaned inodes: %w", err)
	}
	dropped := 0
	for _, k := range keys {
		v, ino := markerVolume(k, pfxOrphan, byID)
		if v == nil {
			if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
				return fmt.Errorf("drop orphaned inodes: %w", err)
			}
			continue
		}
		err := v.mutateLocked(func(m *mutation) error {
			m.delKey(k)
			n, err := m.inode(ino)
			if isNotFound(err) {
				return nil
			}
			if err != nil || n.Nlink > 0 {
				return err
			}
			dropped++
			return m.dropInode(&n)
		})
		if err != nil {
			return fmt.Errorf("drop orphaned inode %d of %s: %w", ino, v.rec.Name, err)
		}
	}
	if dropped > 0 {
		r.log.Info("dropped files unlinked while open before a crash", "files", dropped)
	}
	return nil
}

// haser is the optional ChunkStore method recovery uses; *store.Store has
// it.
type haser interface {
	Has(ctx context.Context, id chunk.ID) (bool, error)
}

// recoverStaging runs at Open after an unclean shutdown. Staging records
// are written as chunks are stored but before the store makes them
// durable (that is what Sync and Commit are for), so a crash can leave a
// staging extent map or block naming a chunk the store lost. Such file
// extents become holes and such blocks fall back to the version below;
// only the staging layer is looked at (revisions were flushed before they
// were recorded), so the work is proportional to what staging changed.
func (r *Repo) recoverStaging(ctx context.Context, lost map[volID]map[Ino]bool) error {
	h, canCheck := r.cs.(haser) // without it, only the unflushed markers count
	for _, v := range r.vols {
		seq := v.seq.Load()
		type fix struct {
			rk  []byte
			val []byte // nil: delete the version
		}
		var fixes []fix
		err := r.db.View(func(txn *badger.Txn) error {
			if !canCheck {
				return nil
			}
			return eachTouched(ctx, txn, v.id, seq, holdsChunks, func(rk, val []byte) error {
				if len(val) == 0 || val[0] != valLive {
					return nil
				}
				if rk[0] == recBlock {
					ids, err := recordChunks(recBlock, val)
					if err != nil {
						return err
					}
					if ok, err := h.Has(ctx, ids[0]); err != nil {
						return err
					} else if !ok {
						fixes = append(fixes, fix{rk: rk})
					}
					return nil
				}
				es, err := decodeExtents(val[1:])
				if err != nil {
					return err
				}
				keep := es[:0:0]
				for _, e := range es {
					ok, err := h.Has(ctx, e.ID)
					if err != nil {
						return err
					}
					if ok {
						keep = append(keep, e)
					}
				}
				if len(keep) != len(es) {
					fixes = append(fixes, fix{rk: rk, val: encodeExtents(keep)})
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("recover staging of %s: %w", v.rec.Name, err)
		}
		if len(fixes) > 0 {
			// One line, not one per record: after a crash mid-rsync
			// there are thousands, printed by whatever command opened
			// the repository first.
			r.log.Warn("staging data lost in a crash: reverting those records", "volume", v.rec.Name, "records", len(fixes))
		}
		// Files that lost data are marked one by one below; a disk
		// gets one marker for the volume, written before the blocks
		// revert so that no crash can leave them reverted unmarked.
		// What the disk's buffer held died with the process: the
		// unflushed marker says how much at least.
		blocks, err := r.unflushedBlocks(v)
		if err != nil {
			return fmt.Errorf("recover staging of %s: %w", v.rec.Name, err)
		}
		for _, f := range fixes {
			if f.rk[0] == recBlock {
				blocks++
			}
		}
		if blocks > 0 {
			r.log.Warn("staging blocks written after the last flush lost in a crash: commit refuses until 'commit --allow-lost'", "volume", v.rec.Name, "blocks", blocks)
			if err := r.noteLostBlocks(v, blocks); err != nil {
				return fmt.Errorf("recover staging of %s: %w", v.rec.Name, err)
			}
		}
		for _, f := range fixes {
			r.log.Debug("staging data lost in a crash: reverting", "volume", v.rec.Name, "record", fmt.Sprintf("%c%x", f.rk[0], f.rk[1:]))
			err := update(r.db, func(txn *badger.Txn) error {
				if f.val == nil {
					if err := txn.Delete(verKey(v.id, f.rk, seq)); err != nil {
						return err
					}
					return txn.Delete(touchedKey(v.id, seq, f.rk))
				}
				return txn.Set(verKey(v.id, f.rk, seq), f.val)
			})
			if err != nil {
				return fmt.Errorf("recover staging of %s: %w", v.rec.Name, err)
			}
			if f.rk[0] == recExtents {
				if lost[v.id] == nil {
					lost[v.id] = map[Ino]bool{}
				}
				lost[v.id][Ino(binary.BigEndian.Uint64(f.rk[1:]))] = true
			}
		}
	}
	return nil
}

// recoverUnflushed makes every file whose data a crash lost visibly out of
// date: the inodes named by unflushed markers and those whose staging
// extents lost chunks (lost) keep their size, read as holes where data is
// missing, and get the Unix epoch as mtime, so a tool comparing size and
// mtime (rsync's quick check) sends them again. It runs at every Open: on
// a clean one there are no markers.
func (r *Repo) recoverUnflushed(lost map[volID]map[Ino]bool) error {
	byID := r.volumesByID()
	var stale [][]byte // markers of removed volumes
	err := r.db.View(func(txn *badger.Txn) error {
		it := keyIterator(txn, []byte(pfxUnflushed))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, ino := markerVolume(k, pfxUnflushed, byID)
			if v == nil {
				stale = append(stale, k)
				continue
			}
			if lost[v.id] == nil {
				lost[v.id] = map[Ino]bool{}
			}
			lost[v.id][ino] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover unflushed files: %w", err)
	}
	for _, k := range stale {
		if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
			return fmt.Errorf("recover unflushed files: %w", err)
		}
	}
	epoch := time.Unix(0, 0).UTC()
	for vid, inos := range lost {
		v := byID[vid]
		if v == nil {
			continue
		}
		seq := v.seq.Load()
		fixed := 0
		for ino := range inos {
			err := update(r.db, func(txn *badger.Txn) error {
				if err := txn.Delete(unflushedKey(vid, ino)); err != nil {
					return err
				}
				n, _, err := v.getInode(sealed(txn), ino, seq)
				if isNotFound(err) {
					return nil // removed since
				}
				if err != nil {
					return err
				}
				if !isReg(n.Mode) {
					return nil
				}
				n.Mtime, n.Ctime = epoch, r.now()
				w := &writer{b: &batch{}, vid: vid, seq: seq}
				if err := w.put(rkIno(recAttr, uint64(ino)), n.encode()); err != nil {
					return err
				}
				if err := w.b.writeTo(txn); err != nil {
					return err
				}
				return txn.Set(lostKey(vid, ino), nil)
			})
			if err != nil {
				return fmt.Errorf("recover unflushed file %d of %s: %w", ino, v.rec.Name, err)
			}
			fixed++
		}
		if fixed > 0 {
			r.log.Warn("staging files whose data a crash lost: mtime set to the epoch so they are sent again",
				"volume", v.rec.Name, "files", fixed)
		}
	}
	return nil
}

// markOpen removes the clean-shutdown marker, running recovery if it was
// missing.
func (r *Repo) markOpen(ctx context.Context) error {
	clean := true
	err := r.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte(keyClean))
		if err == badger.ErrKeyNotFound {
			clean = false
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("open layers: %w", err)
	}
	lost := map[volID]map[Ino]bool{}
	if !clean && len(r.vols) > 0 {
		if err := r.recoverStaging(ctx, lost); err != nil {
			return err
		}
	}
	if err := r.recoverUnflushed(lost); err != nil {
		return err
	}
	if err := r.dropCrashOrphans(); err != nil {
		return err
	}
	if err := r.noteLostChanges(!clean); err != nil {
		return err
	}
	// Recovery's changes go to the index now, not with the first batch.
	if err := r.flushPendingAll(); err != nil {
		return fmt.Errorf("open layers: %w", err)
	}
	// After the flush, so it sees the orphans dropped above as gone.
	if err := r.loadLost(); err != nil {
		return err
	}
	if err := r.loadLostBlocks(); err != nil {
		return err
	}
	if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete([]byte(keyClean)) }); err != nil {
		return fmt.Errorf("open layers: %w", err)
	}
	if err := r.db.Sync(); err != nil {
		return fmt.Errorf("open layers: %w", err)
	}
	return nil
}

// markClean writes the clean-shutdown marker (Close, after everything is
// flushed and synced).
func (r *Repo) markClean() error {
	if err := update(r.db, func(txn *badger.Txn) error { return txn.Set([]byte(keyClean), nil) }); err != nil {
		return err
	}
	return r.db.Sync()
}
