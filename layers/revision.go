package layers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// revRecord is the stored form of a revision (l/r/<vid><seq>).
type revRecord struct {
	Revision
	Meta []chunk.ID `json:"meta,omitempty"` // meta chunks holding the layer's records
	// Protect is the meta chunk recording the latest protect or
	// unprotect, so a rebuilt index keeps the protection (zero: never
	// changed since commit).
	Protect chunk.ID `json:"protect,omitzero"`
}

// refs lists the meta chunks the record holds a reference to: its
// layer's and its own (Meta) and its protection marker. Whatever releases
// or counts a revision's chunks goes through here, so a marker is never
// left behind.
func (rr revRecord) refs() []chunk.ID {
	if rr.Protect.IsZero() {
		return rr.Meta
	}
	return append(slices.Clip(rr.Meta), rr.Protect)
}

// metaProtectMagic starts the meta chunk that records a revision's
// protection, for RebuildFrom: without it a rebuilt index dropped
// protection, and the next prune removed what the user had protected.
const metaProtectMagic = "strata-protect-v1\n"

// protectRecord is such a chunk: the newest (At) for a revision wins.
type protectRecord struct {
	Volume    string `json:"volume"` // volume id
	ID        string `json:"id"`
	Protected bool   `json:"protected"`
	At        int64  `json:"at"` // unix nanoseconds; also makes each chunk unique
}

// revisions lists the volume's revisions, oldest first.
func (v *volume) revisions() ([]revRecord, error) {
	var out []revRecord
	err := v.r.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = revisionPrefix(v.id)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var rr revRecord
			if err := json.Unmarshal(b, &rr); err != nil {
				return fmt.Errorf("decode revision: %w", err)
			}
			rr.Volume = v.rec.Name
			out = append(out, rr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list revisions of %s: %w", v.rec.Name, err)
	}
	return out, nil
}

// Revisions lists a volume's revisions, oldest first.
func (r *Repo) Revisions(ctx context.Context, volume string) ([]Revision, error) {
	v, err := r.volume(volume)
	if err != nil {
		return nil, err
	}
	rrs, err := v.revisions()
	if err != nil {
		return nil, err
	}
	out := make([]Revision, len(rrs))
	for i, rr := range rrs {
		out[i] = rr.Revision
	}
	return out, nil
}

// revision finds a revision by id or unique id prefix.
func (v *volume) revision(id string) (revRecord, error) {
	rrs, err := v.revisions()
	if err != nil {
		return revRecord{}, err
	}
	var match []revRecord
	for _, rr := range rrs {
		if rr.ID == id {
			return rr, nil
		}
		if id != "" && strings.HasPrefix(rr.ID, id) {
			match = append(match, rr)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return revRecord{}, fmt.Errorf("revision %s of %s: %w", id, v.rec.Name, ErrUnknownRevision)
	}
	e := &SpecError{Spec: id, Ambiguous: true}
	for _, rr := range match {
		e.Candidates = append(e.Candidates, rr.Revision)
	}
	return revRecord{}, e
}

// SetProtected protects or unprotects a revision from prune.
func (r *Repo) SetProtected(ctx context.Context, volume, id string, protected bool) error {
	v, err := r.volume(volume)
	if err != nil {
		return err
	}
	v.commitMu.Lock() // revision records change only under the commit lock
	defer v.commitMu.Unlock()
	rr, err := v.revision(id)
	if err != nil {
		return err
	}
	if rr.Protected == protected {
		return nil
	}
	mb, err := json.Marshal(protectRecord{Volume: v.rec.ID, ID: rr.ID, Protected: protected, At: r.now().UnixNano()})
	if err != nil {
		return err
	}
	marker, _, err := r.cs.Put(ctx, chunk.KindMeta, append([]byte(metaProtectMagic), mb...))
	if err != nil {
		return fmt.Errorf("protect %s@%s: store marker: %w", volume, id, err)
	}
	if err := r.cs.Flush(ctx); err != nil {
		r.releaseLog(ctx, []chunk.ID{marker})
		return storeErr(fmt.Sprintf("protect %s@%s: flush store", volume, id), err)
	}
	old := rr.Protect
	rr.Protected, rr.Protect = protected, marker
	b, err := json.Marshal(rr)
	if err != nil {
		return err
	}
	err = update(r.db, func(txn *badger.Txn) error { return txn.Set(revisionKey(v.id, rr.Seq), b) })
	if err != nil {
		r.releaseLog(ctx, []chunk.ID{marker})
		return fmt.Errorf("protect %s@%s: %w", volume, id, err)
	}
	if !old.IsZero() {
		r.releaseLog(ctx, []chunk.ID{old})
	}
	return nil
}

// Snapshot returns a read-only view of an fs volume at revision id.
func (r *Repo) Snapshot(ctx context.Context, volume, id string) (*Tree, error) {
	v, err := r.volume(volume)
	if err != nil {
		return nil, err
	}
	if v.rec.Type != TypeFS {
		return nil, fmt.Errorf("snapshot of volume %q: %w", volume, ErrWrongType)
	}
	rr, err := v.revision(id)
	if err != nil {
		return nil, err
	}
	return &Tree{tree{v: v, seq: rr.Seq, files: newFileMaps(fileMapsMax)}}, nil
}

// RemoveVolume removes a volume and, with force, all its revisions.
// Without force and with revisions, or with protected revisions, the
// error is a *HasRevisionsError.
// Every chunk reference the volume held is released.
func (r *Repo) RemoveVolume(ctx context.Context, name string, force bool) error {
	v, err := r.volume(name)
	if err != nil {
		return err
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	rrs, err := v.revisions()
	if err != nil {
		return err
	}
	var protected []string
	for _, rr := range rrs {
		if rr.Protected {
			protected = append(protected, rr.ID)
		}
	}
	// Protection is what keeps a revision from every removal; force
	// removed them unannounced.
	if len(rrs) > 0 && (!force || len(protected) > 0) {
		return &HasRevisionsError{Volume: name, Revisions: len(rrs), Protected: protected}
	}
	// Into badger first, so the removal below finds every record.
	if err := v.flushPending(); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	r.mu.Lock()
	delete(r.vols, name)
	r.mu.Unlock()
	v.removed.Store(true)
	v.pend.close()
	// Drop buffered writes.
	v.filesMu.Lock()
	files := make([]*openFile, 0, len(v.files))
	for _, f := range v.files {
		files = append(files, f)
	}
	v.filesMu.Unlock()
	for _, f := range files {
		f.dataMu.Lock()
		f.forget()
		f.dataMu.Unlock()
	}
	if d := v.stagingDisk(); d != nil {
		d.dropDirty()
	}
	var release []chunk.ID
	for _, rr := range rrs {
		release = append(release, rr.refs()...)
	}
	var prunedKeys [][]byte
	err = r.db.View(func(txn *badger.Txn) error {
		prs, keys, err := v.prunedRecords(txn)
		for _, pr := range prs {
			release = append(release, pr.Keep...)
			release = append(release, pr.Marker)
		}
		prunedKeys = keys
		return err
	})
	if err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	// Collect every key of the volume and the chunks its versions hold.
	var keys [][]byte
	err = r.db.View(func(txn *badger.Txn) error {
		for _, p := range [][]byte{
			append([]byte(pfxData), v.id[:]...),
			append([]byte(pfxTouched), v.id[:]...),
			revisionPrefix(v.id),
		} {
			it := keyIterator(txn, p)
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				key := item.KeyCopy(nil)
				keys = append(keys, key)
				if p[2] != pfxData[2] {
					continue
				}
				rk, _ := splitVersion(key)
				if !holdsChunks(rk[0]) {
					continue
				}
				val, err := item.ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				ids, err := recordChunks(rk[0], val)
				if err != nil {
					it.Close()
					return err
				}
				release = append(release, ids...)
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	keys = append(keys, prunedKeys...)
	keys = append(keys, stateKey(v.id), volumeKey(name), lostBlocksKey(v.id), unflushedBlocksKey(v.id), changedKey(v.id),
		unsavedKey(v.id), lostChangesKey(v.id))
	wb := r.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("remove volume %s: %w", name, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	if err := r.db.Sync(); err != nil {
		return fmt.Errorf("remove volume %s: sync index: %w", name, err)
	}
	// References go after the records: a crash in between leaks space
	// (found by a later check) rather than losing data.
	for len(release) > 0 {
		n := min(len(release), 10000)
		if err := r.cs.Release(ctx, release[:n]); err != nil {
			return fmt.Errorf("remove volume %s: release chunks: %w", name, err)
		}
		release = release[n:]
	}
	return nil
}

// recordChunks returns the chunk ids a versioned record value holds.
func recordChunks(rt byte, val []byte) ([]chunk.ID, error) {
	if len(val) == 0 || val[0] != valLive {
		return nil, nil
	}
	switch rt {
	case recExtents:
		es, err := decodeExtents(val[1:])
		if err != nil {
			return nil, err
		}
		return extentIDs(es), nil
	case recBlock:
		if len(val) != 1+len(chunk.ID{}) {
			return nil, fmt.Errorf("decode block record: length %d", len(val))
		}
		var id chunk.ID
		copy(id[:], val[1:])
		return []chunk.ID{id}, nil
	}
	return nil, nil
}
