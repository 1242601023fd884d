package layers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A crash rolls a file tree's staging back to its last durable point:
// metadata waits in memory (pending.go) and then in badger's unsynced log,
// so files created or grown just before a kill -9, an OOM kill or a power
// failure vanish or come back short. The per-file markers of recover.go
// cannot show that (they go with the rolled-back records), and a script
// running `rsync && strata commit` around a crash would commit the
// rolled-back tree without a word. So staging carries one marker while it
// holds changes that are not durable, and a crash that finds it makes
// Commit refuse until the backup runs again.

// pfxUnsaved marks a file tree's staging that holds changes not yet
// durable (l/s/<vid>; value: Unix ns of the first of them). The first
// change after a durable point writes it before that change returns; the
// next durable point (fsync, Sync, Commit, Close, the idle sync) deletes
// it. Like the disk's unflushed marker it is not synced: a killed process
// does not lose it, a power failure may.
const pfxUnsaved = "l/s/"

func unsavedKey(vid volID) []byte { return append([]byte(pfxUnsaved), vid[:]...) }

// pfxLostChanges marks a file tree's staging that a crash may have rolled
// back (l/m/<vid>; value: the first unsaved change and the recovery, Unix
// ns, 8 bytes each). Commit refuses while it is there (LostDataError);
// the next change to staging clears it, since that is the backup running
// again (rsync then sends what the crash took), and so does a commit with
// AllowLost.
const pfxLostChanges = "l/m/"

func lostChangesKey(vid volID) []byte { return append([]byte(pfxLostChanges), vid[:]...) }

// unsaved tracks a file tree's unsaved marker in memory.
type unsaved struct {
	// gate is held shared by a change from marking until it is in
	// pending, and exclusively while a durable point takes the mark, so
	// everything marked before is in what that durable point writes.
	gate   sync.RWMutex
	mu     sync.Mutex   // orders writes and deletes of the stored marker
	marked atomic.Bool  // the marker is stored for changes not yet durable
	since  atomic.Int64 // Unix ns of the first of them
	// last is the latest change, markedAt when the marker was written and
	// tried the idle sync's latest attempt (Unix ns of the wall clock, not
	// Options.Now: idleness is real time).
	last, markedAt, tried atomic.Int64
	// landed counts changes applied to pending, file flushes included:
	// those do not mark (they are the server's, not the user's), and one
	// landing during a durable point leaves it unsaved (takeUnsaved).
	landed atomic.Uint64
	// lost mirrors the lost-changes marker: [since, at] in Unix ns, or 0.
	lostSince, lostAt atomic.Int64
}

// beginChange is called by every change to v's staging (after commitMu is
// held shared), before the change lands; done is called once it has.
func (v *volume) beginChange() (done func(), err error) {
	u := &v.unsaved
	u.gate.RLock()
	u.last.Store(time.Now().UnixNano())
	if !u.marked.Load() {
		u.mu.Lock()
		if !u.marked.Load() {
			now := v.r.now().UnixNano()
			if err := v.storeUnsaved(now); err != nil {
				u.mu.Unlock()
				u.gate.RUnlock()
				return nil, fmt.Errorf("mark staging of %s unsaved: %w", v.rec.Name, err)
			}
			u.since.Store(now)
			u.markedAt.Store(time.Now().UnixNano())
			u.marked.Store(true)
		}
		u.mu.Unlock()
	}
	if u.lostAt.Load() != 0 {
		if err := v.clearLostChanges(); err != nil {
			u.gate.RUnlock()
			return nil, err
		}
	}
	return u.gate.RUnlock, nil
}

// storeUnsaved writes v's unsaved marker, dated since (Unix ns).
func (v *volume) storeUnsaved(since int64) error {
	return update(v.r.db, func(txn *badger.Txn) error {
		return txn.Set(unsavedKey(v.id), binary.BigEndian.AppendUint64(nil, uint64(since)))
	})
}

// clearLostChanges drops v's lost-changes marker: the backup writes
// staging again.
func (v *volume) clearLostChanges() error {
	u := &v.unsaved
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.lostAt.Load() == 0 {
		return nil
	}
	if err := update(v.r.db, func(txn *badger.Txn) error { return txn.Delete(lostChangesKey(v.id)) }); err != nil {
		return fmt.Errorf("clear lost-changes marker of %s: %w", v.rec.Name, err)
	}
	v.r.log.Info("staging written again after a crash lost changes: commit allowed again", "volume", v.rec.Name)
	u.lostSince.Store(0)
	u.lostAt.Store(0)
	return nil
}

// takeUnsaved starts a durable point: it returns the volumes whose staging
// was marked unsaved, now unmarked in memory, with every change marked
// before it in pending, and how many changes each had landed by then.
// saved ends the durable point. A volume in the middle of a change (a
// write loading a large file's base, say) is skipped and stays marked:
// waiting for it would stall this durable point (an fsync elsewhere, an
// NBD flush) and, behind the waiting writer lock, every change of it.
func (r *Repo) takeUnsaved() []taken {
	var out []taken
	for _, v := range r.volumesByID() {
		u := &v.unsaved
		if !u.marked.Load() || !u.gate.TryLock() {
			continue
		}
		u.mu.Lock()
		if u.marked.Swap(false) {
			out = append(out, taken{v: v, landed: u.landed.Load()})
		}
		u.mu.Unlock()
		u.gate.Unlock()
	}
	return out
}

// taken is a volume a durable point took the unsaved mark of.
type taken struct {
	v      *volume
	landed uint64
}

// saved ends a durable point that took vs: on success their markers go,
// unless a change since marked them again (it rewrote the marker, and is
// not durable), a change landed after the mark was taken (a file's flush
// may have put its extent map in pending after the metadata was written),
// or a file still holds buffered data (an fsync of another file, a file
// the idle sync left open: its size may not even be in a record yet, so a
// crash would bring it back empty). On failure they stay marked, the
// marker written again (a commit meanwhile may have deleted it).
func (r *Repo) saved(vs []taken, ok bool) error {
	var first error
	for _, t := range vs {
		v, u := t.v, &t.v.unsaved
		u.mu.Lock()
		switch {
		case u.marked.Load():
			// A change re-marked it: the stored marker is its.
		case !ok:
			if err := v.storeUnsaved(u.since.Load()); err != nil && first == nil {
				first = fmt.Errorf("keep unsaved marker of %s: %w", v.rec.Name, err)
			}
			u.marked.Store(true)
		case u.landed.Load() != t.landed || v.buffering():
			u.marked.Store(true)
		default:
			if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete(unsavedKey(v.id)) }); err != nil && first == nil {
				first = fmt.Errorf("clear unsaved marker of %s: %w", v.rec.Name, err)
				u.marked.Store(true)
			}
		}
		u.mu.Unlock()
	}
	return first
}

// buffering reports whether a file of v holds data not yet stored.
func (v *volume) buffering() bool {
	v.filesMu.Lock()
	defer v.filesMu.Unlock()
	for _, f := range v.files {
		f.mu.Lock()
		dirty := f.dirty
		f.mu.Unlock()
		if dirty {
			return true
		}
	}
	return false
}

// noteLostChanges turns the unsaved markers a crash left into lost-changes
// markers (recovery, before anything else writes staging). After a clean
// close there are none.
func (r *Repo) noteLostChanges(crashed bool) error {
	byID := r.volumesByID()
	keys, err := r.keysWithPrefix(pfxUnsaved)
	if err != nil {
		return fmt.Errorf("load unsaved markers: %w", err)
	}
	for _, k := range keys {
		var vid volID
		var v *volume
		if len(k) == len(pfxUnsaved)+len(vid) {
			copy(vid[:], k[len(pfxUnsaved):])
			v = byID[vid]
		}
		err := update(r.db, func(txn *badger.Txn) error {
			if !crashed || v == nil {
				return txn.Delete(k)
			}
			item, err := txn.Get(k)
			if err != nil {
				return err
			}
			since, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(since) != 8 {
				since = binary.BigEndian.AppendUint64(nil, uint64(r.now().UnixNano()))
			}
			// An earlier crash's loss not yet cleared goes back further.
			if item, err := txn.Get(lostChangesKey(v.id)); err == nil {
				if old, err := item.ValueCopy(nil); err == nil && len(old) == 16 &&
					binary.BigEndian.Uint64(old) < binary.BigEndian.Uint64(since) {
					since = old[:8]
				}
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			r.log.Warn("the server stopped with staging changes not yet saved: commit refuses until the backup runs again or 'commit --allow-lost'",
				"volume", v.rec.Name, "since", time.Unix(0, int64(binary.BigEndian.Uint64(since))).UTC())
			if err := txn.Delete(k); err != nil {
				return err
			}
			return txn.Set(lostChangesKey(v.id), binary.BigEndian.AppendUint64(since, uint64(r.now().UnixNano())))
		})
		if err != nil {
			return fmt.Errorf("note lost changes: %w", err)
		}
	}
	return r.loadLostChanges()
}

// loadLostChanges reads the lost-changes markers into their volumes.
func (r *Repo) loadLostChanges() error {
	return r.loadVolumeMarkers(pfxLostChanges, func(v *volume, val []byte) (bool, error) {
		if len(val) != 16 {
			return false, nil
		}
		v.unsaved.lostSince.Store(int64(binary.BigEndian.Uint64(val)))
		v.unsaved.lostAt.Store(int64(binary.BigEndian.Uint64(val[8:])))
		return true, nil
	})
}

// lostChanges returns when v's staging may have lost changes in a crash:
// the first unsaved change and the recovery that found it (zero: none).
func (v *volume) lostChanges() (since, at time.Time) {
	s, a := v.unsaved.lostSince.Load(), v.unsaved.lostAt.Load()
	if a == 0 {
		return time.Time{}, time.Time{}
	}
	return time.Unix(0, s).UTC(), time.Unix(0, a).UTC()
}

// idleSyncer makes file-tree staging durable in the background: once a
// volume with unsaved changes has had none for IdleSync, or its oldest is
// MaxUnsaved old. Without it a tree written without fsync (rsync, cp)
// stayed in memory until commit or unmount, however long that took. A
// volume the sync could not clear (a file still open for writing) is
// tried again only after a new change, or MaxUnsaved after the last try:
// not every tick.
func (r *Repo) idleSyncer() {
	defer r.workers.Done()
	idle, most := r.opts.IdleSync, r.opts.MaxUnsaved
	if idle == 0 {
		idle = 2 * time.Second
	}
	if most <= 0 {
		most = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.done // Close: a flush under way gives up rather than hold it
		cancel()
	}()
	t := time.NewTicker(min(idle, most) / 2)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var due []*volume
		for _, v := range r.volumesByID() {
			u := &v.unsaved
			if !u.marked.Load() {
				continue
			}
			last, tried := u.last.Load(), u.tried.Load()
			quiet := last > tried && now-last >= int64(idle)
			old := now-u.markedAt.Load() >= int64(most) && now-tried >= int64(most)
			if quiet || old {
				due = append(due, v)
				u.tried.Store(now)
			}
		}
		if len(due) == 0 {
			continue
		}
		for _, v := range due {
			if err := v.flushFiles(ctx, true); err != nil && ctx.Err() == nil {
				r.log.Warn("background sync of staging", "volume", v.rec.Name, "err", err)
			}
		}
		if err := r.durable(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("background sync of staging", "err", err)
		}
	}
}
