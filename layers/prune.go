package layers

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// metaPrunedMagic starts the meta chunk that records a removed revision,
// so a rebuild of the index does not bring it back.
const metaPrunedMagic = "strata-pruned-v1\n"

// pfxPruned keys the pruned-revision records: l/p/<vid><seq>.
const pfxPruned = "l/p/"

// pfxReleasing keys the removals whose chunk releases may not have reached
// the store yet: l/q/<vid><seq>, written in the transaction that deletes
// the revision and deleted once its releases are durable. Store reference
// counts are only ever too high while one exists (space, never data), and
// FinishRemovals recounts them.
const pfxReleasing = "l/q/"

// prunedRecord remembers a removed revision whose layer still holds
// versions later readers see: the layer's meta chunks stay (Keep), and
// Marker is the meta chunk telling a rebuild the revision is gone.
type prunedRecord struct {
	Volume string     `json:"volume"` // volume id
	ID     string     `json:"id"`
	Seq    uint64     `json:"seq"`
	Keep   []chunk.ID `json:"keep,omitempty"`
	Marker chunk.ID   `json:"marker"`
}

func prunedKey(vid volID, seq uint64) []byte {
	return be64(append([]byte(pfxPruned), vid[:]...), seq)
}

func releasingKey(vid volID, seq uint64) []byte {
	return be64(append([]byte(pfxReleasing), vid[:]...), seq)
}

// RemoveRevision removes a revision (prune). Versions of its layer (and of
// layers of revisions removed before, down to the previous surviving
// revision) that no surviving revision and not staging can see are
// deleted and their chunks released; versions still visible stay. The
// work is proportional to what those layers changed. Protected revisions
// are removed too: honouring protection is the caller's policy.
func (r *Repo) RemoveRevision(ctx context.Context, volume, id string) error {
	v, err := r.volume(volume)
	if err != nil {
		return err
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	// What staging sees is read from badger below.
	if err := v.flushPending(); err != nil {
		return fmt.Errorf("remove %s@%s: %w", volume, id, err)
	}
	rr, err := v.revision(id)
	if err != nil {
		return err
	}
	rrs, err := v.revisions()
	if err != nil {
		return err
	}
	points, prev, _ := sweepBounds(v.seq.Load(), rrs, rr.Seq)
	release, kept, dels, err := v.sweep(ctx, prev+1, rr.Seq, points, true)
	if err != nil {
		return fmt.Errorf("remove revision %s@%s: %w", volume, id, err)
	}
	// The revision's own meta chunk is last in Meta; the layer chunks
	// before it stay while versions of the layer survive.
	layerMeta, revMeta := rr.Meta, []chunk.ID(nil)
	if n := len(rr.Meta); n > 0 {
		layerMeta, revMeta = rr.Meta[:n-1], rr.Meta[n-1:]
	}
	release = append(release, revMeta...)
	if !rr.Protect.IsZero() { // the rest of rr.refs()
		release = append(release, rr.Protect)
	}
	pr := prunedRecord{Volume: v.rec.ID, ID: rr.ID, Seq: rr.Seq}
	if kept[rr.Seq] > 0 {
		pr.Keep = layerMeta
	} else {
		release = append(release, layerMeta...)
	}
	mb, err := json.Marshal(pr)
	if err != nil {
		return err
	}
	pr.Marker, _, err = r.cs.Put(ctx, chunk.KindMeta, append([]byte(metaPrunedMagic), mb...))
	if err != nil {
		return fmt.Errorf("remove revision %s@%s: store marker: %w", volume, id, err)
	}
	if err := r.cs.Flush(ctx); err != nil {
		r.releaseLog(ctx, []chunk.ID{pr.Marker})
		return fmt.Errorf("remove revision %s@%s: flush store: %w", volume, id, err)
	}
	pb, err := json.Marshal(pr)
	if err != nil {
		return err
	}
	err = update(r.db, func(txn *badger.Txn) error {
		if err := txn.Delete(revisionKey(v.id, rr.Seq)); err != nil {
			return err
		}
		if err := txn.Set(releasingKey(v.id, rr.Seq), nil); err != nil {
			return err
		}
		return txn.Set(prunedKey(v.id, rr.Seq), pb)
	})
	if err == nil {
		err = r.db.Sync()
	}
	// The revision is gone for good before any version it saw goes: a
	// crash in between leaves unseen versions (space), never a revision
	// with missing records.
	if err == nil {
		err = r.deleteKeys(dels)
	}
	if err != nil {
		return fmt.Errorf("remove revision %s@%s: %w", volume, id, err)
	}
	// References go last: a crash before leaks space, never data, and
	// the releasing key left behind tells FinishRemovals to recount.
	for len(release) > 0 {
		n := min(len(release), 10000)
		if err := r.cs.Release(ctx, release[:n]); err != nil {
			return fmt.Errorf("remove revision %s@%s: release chunks: %w", volume, id, err)
		}
		release = release[n:]
	}
	if err := r.cs.Flush(ctx); err != nil {
		return fmt.Errorf("remove revision %s@%s: flush releases: %w", volume, id, err)
	}
	if err := update(r.db, func(txn *badger.Txn) error { return txn.Delete(releasingKey(v.id, rr.Seq)) }); err != nil {
		return fmt.Errorf("remove revision %s@%s: %w", volume, id, err)
	}
	return nil
}

// RemovalsPending reports whether a RemoveRevision was interrupted (a
// crash, a failed store) after the revision was gone but before its
// records were swept and its chunk releases were durable.
func (r *Repo) RemovalsPending(ctx context.Context) (bool, error) {
	keys, err := r.releasingKeys()
	return len(keys) > 0, err
}

// RecountFunc replaces every chunk's reference count with the number of
// times refs yields it (the store's SetReferences).
type RecountFunc func(ctx context.Context, refs func(yield func(id chunk.ID) error) error) error

// FinishRemovals completes interrupted RemoveRevision calls: it sweeps the
// versions their layers left that nothing sees any more, then has recount
// set the store's reference counts from References, since which releases
// reached the store before the interruption is unknown. It returns how
// many removals it finished. recount must not run while anything else
// puts or releases chunks: call it with the repository otherwise idle.
// A crash inside it leaves the keys; the next call does it all again.
func (r *Repo) FinishRemovals(ctx context.Context, recount RecountFunc) (int, error) {
	keys, err := r.releasingKeys()
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	byID := r.volumesByID()
	base := len(pfxReleasing)
	for _, k := range keys {
		var vid volID
		copy(vid[:], k[base:base+len(vid)])
		v, ok := byID[vid]
		if !ok {
			continue // the volume went since: its records went with it
		}
		if err := v.resweep(ctx, binary.BigEndian.Uint64(k[base+len(vid):])); err != nil {
			return 0, fmt.Errorf("finish removal in volume %s: %w", v.rec.Name, err)
		}
	}
	refs := func(yield func(id chunk.ID) error) error { return r.References(ctx, yield) }
	if err := recount(ctx, refs); err != nil {
		return 0, fmt.Errorf("finish removals: recount references: %w", err)
	}
	if err := r.deleteKeys(keys); err != nil {
		return 0, fmt.Errorf("finish removals: %w", err)
	}
	return len(keys), nil
}

// resweep deletes what a removal of the revision at seq left behind: the
// versions of layers since the previous surviving revision that no
// surviving revision and not staging sees. Their chunks are left to the
// recount.
func (v *volume) resweep(ctx context.Context, seq uint64) error {
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	if err := v.flushPending(); err != nil {
		return err
	}
	rrs, err := v.revisions()
	if err != nil {
		return err
	}
	points, prev, listed := sweepBounds(v.seq.Load(), rrs, seq)
	if listed {
		return nil // not removed after all
	}
	_, _, dels, err := v.sweep(ctx, prev+1, seq, points, false)
	if err != nil {
		return err
	}
	return v.r.deleteKeys(dels)
}

// sweepBounds gives what a sweep of the layers up to the revision at seq
// keeps versions for: points, staging's sequence and every other
// revision's, ascending; prev, the newest other revision below seq; and
// whether rrs still lists the revision at seq.
func sweepBounds(staging uint64, rrs []revRecord, seq uint64) (points []uint64, prev uint64, listed bool) {
	points = []uint64{staging}
	for _, o := range rrs {
		if o.Seq == seq {
			listed = true
			continue
		}
		points = append(points, o.Seq)
		if o.Seq < seq {
			prev = max(prev, o.Seq)
		}
	}
	slices.Sort(points)
	return points, prev, listed
}

func (r *Repo) releasingKeys() ([][]byte, error) {
	keys, err := r.keysWithPrefix(pfxReleasing)
	if err != nil {
		return nil, fmt.Errorf("read pending removals: %w", err)
	}
	return keys, nil
}

// sweep deletes the versions written by layers from..to that no reading
// point (sorted seqs of surviving revisions and staging) sees: a version
// at L is seen by p when L <= p < the record's next version above L. It
// returns the chunks the deleted versions held (when collect) and how
// many versions each layer kept. It only plans: dels are the keys to
// delete (see deleteKeys).
func (v *volume) sweep(ctx context.Context, from, to uint64, points []uint64, collect bool) (release []chunk.ID, kept map[uint64]int, dels [][]byte, err error) {
	kept = map[uint64]int{}
	if from > to {
		return nil, kept, nil, nil
	}
	err = v.r.db.View(func(txn *badger.Txn) error {
		base := append([]byte(pfxTouched), v.id[:]...)
		it := keyIterator(txn, base)
		defer it.Close()
		for it.Seek(be64(append([]byte{}, base...), from)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().KeyCopy(nil)
			seq := binary.BigEndian.Uint64(key[len(base):])
			if seq > to {
				break
			}
			rk := key[len(base)+8:]
			next, err := nextVersion(txn, v.id, rk, seq)
			if err != nil {
				return err
			}
			i := sort.Search(len(points), func(i int) bool { return points[i] >= seq })
			if i < len(points) && (next == 0 || points[i] < next) {
				kept[seq]++
				continue
			}
			vk := verKey(v.id, rk, seq)
			if collect {
				item, err := txn.Get(vk)
				if err != nil {
					return fmt.Errorf("read swept record: %w", err)
				}
				val, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				ids, err := recordChunks(rk[0], val)
				if err != nil {
					return err
				}
				release = append(release, ids...)
			}
			dels = append(dels, vk, key)
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return release, kept, dels, nil
}

// deleteKeys deletes keys in batches and syncs.
func (r *Repo) deleteKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	wb := r.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return r.db.Sync()
}

// nextVersion returns the seq of the oldest version of rk newer than seq
// (0 if none).
func nextVersion(txn *badger.Txn, vid volID, rk []byte, seq uint64) (uint64, error) {
	prefix := dataPrefix(vid, rk)
	it := keyIterator(txn, prefix)
	defer it.Close()
	var next uint64
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		key := it.Item().Key()
		if len(key) != len(prefix)+8 {
			continue
		}
		_, s := splitVersion(key)
		if s <= seq {
			break
		}
		next = s
	}
	return next, nil
}

// prunedRecords lists a volume's pruned-revision records.
func (v *volume) prunedRecords(txn *badger.Txn) ([]prunedRecord, [][]byte, error) {
	p := append([]byte(pfxPruned), v.id[:]...)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = p
	it := txn.NewIterator(opts)
	defer it.Close()
	var out []prunedRecord
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		b, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, nil, err
		}
		var pr prunedRecord
		if err := json.Unmarshal(b, &pr); err != nil {
			return nil, nil, fmt.Errorf("decode pruned record: %w", err)
		}
		out = append(out, pr)
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	return out, keys, nil
}

func parseVolID(s string) (volID, bool) {
	var vid volID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(vid) {
		return vid, false
	}
	copy(vid[:], b)
	return vid, true
}
