package layers

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// metaChunkSize bounds the layer records packed into one meta chunk.
const metaChunkSize = 1 << 20

// Magic prefixes of meta chunks: layer records and revision records.
const (
	metaLayerMagic    = "strata-layer-v1\n"
	metaRevisionMagic = "strata-revision-v1\n"
)

// Commit seals the volume's staging layer as a new revision and opens a new
// staging layer on top, atomically with respect to in-flight writes: a write
// that returned before Commit is in the revision; one started after is not.
// Commit makes the revision durable (store flushed, records written) before
// returning, and writes the layer's records into the store as meta chunks.
func (r *Repo) Commit(ctx context.Context, volume string, opts CommitOptions) (Revision, error) {
	v, err := r.volume(volume)
	if err != nil {
		return Revision{}, err
	}
	// Checked before anything is sealed, so a bad tag commits nothing.
	var tags []string
	for _, t := range opts.Tags {
		t = strings.TrimSpace(t)
		if err := CheckTag(t); err != nil {
			return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	now := r.now().UTC()
	when := opts.Time.UTC()
	if opts.Time.IsZero() {
		when = now
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	v.mu.Lock()
	lost, lb := len(v.lost), v.lostBlocks
	var some []Ino
	for ino := range v.lost {
		if len(some) == 5 {
			break
		}
		some = append(some, ino)
	}
	v.mu.Unlock()
	changesSince, changesAt := v.lostChanges()
	if (lost > 0 || lb.n > 0 || !changesAt.IsZero()) && !opts.AllowLost {
		le := &LostDataError{Volume: volume, Files: lost, Blocks: lb.n, At: lb.at, Changes: changesSince}
		if le.At.IsZero() {
			le.At = changesAt
		}
		slices.Sort(some)
		for _, ino := range some {
			le.Paths = append(le.Paths, v.pathOf(ctx, ino, v.seq.Load()))
		}
		return Revision{}, le
	}
	if err := v.flushAll(ctx); err != nil {
		return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
	}
	if d := v.stagingDisk(); d != nil {
		if err := d.flushDirty(ctx); err != nil {
			return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
		}
	}
	// sealLayer reads the layer from badger.
	if err := v.flushPending(); err != nil {
		return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
	}
	revs, err := v.revisions()
	if err != nil {
		return Revision{}, err
	}
	seq := v.seq.Load()
	rev := revRecord{Revision: Revision{Volume: volume, Seq: seq, Time: when, Tags: tags, Message: opts.Message}}
	var idb [8]byte
	if _, err := io.ReadFull(rand.Reader, idb[:]); err != nil {
		return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
	}
	rev.ID = hex.EncodeToString(idb[:])
	if len(revs) > 0 {
		prev := revs[len(revs)-1]
		rev.Size, rev.Files = prev.Size, prev.Files
	}
	dsize, dfiles, metaIDs, err := v.sealLayer(ctx, seq)
	if err != nil {
		return Revision{}, fmt.Errorf("commit %s: %w", volume, err)
	}
	rev.Size += dsize
	rev.Files += dfiles
	if v.rec.Type == TypeBlock {
		rev.Size, rev.Files = v.rec.Size, 0
	}
	rev.Added = v.added.Load()
	rev.Meta = metaIDs
	// Not the gap since the previous revision's time: with commit --time
	// that is an import's age, and for scheduled backups the schedule.
	first := now
	if c := v.changed.Load(); c != 0 && c < now.UnixNano() {
		first = time.Unix(0, c).UTC()
	}
	rev.Duration = r.now().Sub(first)
	// The revision record itself goes into the store too, so a rebuild
	// of the index finds volumes and revisions from the shards alone.
	rb, err := json.Marshal(struct {
		Volume   volRecord `json:"volume"`
		Revision revRecord `json:"revision"`
	}{v.rec, rev})
	if err != nil {
		return Revision{}, err
	}
	rid, added, err := r.cs.Put(ctx, chunk.KindMeta, append([]byte(metaRevisionMagic), rb...))
	if err != nil {
		r.releaseLog(ctx, metaIDs)
		return Revision{}, fmt.Errorf("commit %s: store revision record: %w", volume, err)
	}
	if added {
		rev.Added += int64(len(rb))
	}
	rev.Meta = append(rev.Meta, rid)
	if err := r.cs.Flush(ctx); err != nil {
		r.releaseLog(ctx, rev.Meta)
		return Revision{}, storeErr("commit "+volume+": flush store", err)
	}
	b, err := json.Marshal(rev)
	if err != nil {
		return Revision{}, err
	}
	v.mu.Lock()
	// Every change before the commit is in the revision, durable with it:
	// staging has nothing unsaved (no change runs: commitMu).
	v.unsaved.mu.Lock()
	err = update(r.db, func(txn *badger.Txn) error {
		if err := txn.Set(revisionKey(v.id, seq), b); err != nil {
			return err
		}
		if lb.n > 0 {
			// AllowLost: the revision takes the disk as it reads.
			if err := txn.Delete(lostBlocksKey(v.id)); err != nil {
				return err
			}
		}
		if err := txn.Delete(unsavedKey(v.id)); err != nil {
			return err
		}
		if err := txn.Delete(lostChangesKey(v.id)); err != nil {
			return err
		}
		if err := txn.Delete(changedKey(v.id)); err != nil {
			return err
		}
		return txn.Set(stateKey(v.id), encodeState(max(v.nextIno, v.inoLimit), seq+1))
	})
	if err == nil {
		if lb.n > 0 {
			v.lostBlocks = lostBlocks{}
		}
		v.unsaved.marked.Store(false)
		v.unsaved.lostSince.Store(0)
		v.unsaved.lostAt.Store(0)
		v.seq.Store(seq + 1)
		v.setFresh()
		v.added.Store(0)
		v.changed.Store(0)
	}
	v.unsaved.mu.Unlock()
	v.mu.Unlock()
	if err != nil {
		r.releaseLog(ctx, rev.Meta)
		return Revision{}, fmt.Errorf("commit %s: write revision: %w", volume, err)
	}
	if err := r.db.Sync(); err != nil {
		return Revision{}, fmt.Errorf("commit %s: sync index: %w", volume, err)
	}
	r.log.Info("commit", "volume", volume, "revision", rev.ID, "seq", seq, "size", rev.Size, "added", rev.Added)
	r.tidyIndex()
	return rev.Revision, nil
}

func (r *Repo) releaseLog(ctx context.Context, ids []chunk.ID) {
	if len(ids) == 0 {
		return
	}
	if err := r.cs.Release(ctx, ids); err != nil {
		r.log.Warn("release chunks", "err", err)
	}
}

// sealLayer walks the records layer seq touched: it sums how they change
// the visible size and inode count, and packs them into meta chunks.
// Work is proportional to what the layer changed.
func (v *volume) sealLayer(ctx context.Context, seq uint64) (dsize, dfiles int64, ids []chunk.ID, err error) {
	var buf []byte
	startChunk := func() {
		buf = append(buf[:0], metaLayerMagic...)
		buf = append(buf, v.id[:]...)
		buf = binary.BigEndian.AppendUint64(buf, seq)
	}
	emit := func() error {
		id, added, err := v.r.cs.Put(ctx, chunk.KindMeta, buf)
		if err != nil {
			return storeErr("store layer records", err)
		}
		if added {
			v.added.Add(int64(len(buf)))
		}
		ids = append(ids, id)
		startChunk()
		return nil
	}
	startChunk()
	empty := len(buf)
	err = v.r.db.View(func(txn *badger.Txn) error {
		return eachTouched(ctx, txn, v.id, seq, nil, func(rk, val []byte) error {
			if rk[0] == recAttr {
				ds, df, err := v.attrDelta(txn, rk, seq, val)
				if err != nil {
					return err
				}
				dsize += ds
				dfiles += df
			}
			buf = binary.AppendUvarint(buf, uint64(len(rk)))
			buf = append(buf, rk...)
			buf = binary.AppendUvarint(buf, uint64(len(val)))
			buf = append(buf, val...)
			if len(buf) >= metaChunkSize {
				return emit()
			}
			return nil
		})
	})
	if err == nil && len(buf) > empty {
		err = emit()
	}
	if err != nil {
		v.r.releaseLog(ctx, ids)
		return 0, 0, nil, err
	}
	return dsize, dfiles, ids, nil
}

// attrDelta compares an inode's version in layer seq with the one below.
func (v *volume) attrDelta(txn *badger.Txn, rk []byte, seq uint64, val []byte) (dsize, dfiles int64, err error) {
	ino := Ino(binary.BigEndian.Uint64(rk[1:]))
	size := func(b []byte) (int64, int64, error) {
		n, err := decodeInode(ino, b)
		if err != nil {
			return 0, 0, err
		}
		if n.Nlink == 0 {
			return 0, 0, nil // unlinked, kept for a handle: in no directory
		}
		if isReg(n.Mode) {
			return n.Size, 1, nil
		}
		return 0, 1, nil
	}
	var newSize, newFiles int64
	if len(val) > 0 && val[0] == valLive {
		if newSize, newFiles, err = size(val[1:]); err != nil {
			return 0, 0, err
		}
	}
	var oldSize, oldFiles int64
	if seq > 1 {
		old, _, err := getVersion(sealed(txn), v.id, rk, seq-1)
		if err == nil {
			if oldSize, oldFiles, err = size(old); err != nil {
				return 0, 0, err
			}
		} else if !isNotFound(err) {
			return 0, 0, err
		}
	}
	return newSize - oldSize, newFiles - oldFiles, nil
}
