package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// WalkFunc visits every chunk of a kind; (*store.Store).Walk is one.
type WalkFunc func(ctx context.Context, kind chunk.Kind, fn func(id chunk.ID, data []byte) error) error

// RebuildFrom restores volumes, revisions and their records from the meta
// chunks commit wrote into the store (for `repair --rebuild-index`, after
// the store rebuilt its own index). Volumes already present are left
// alone; one whose name a different volume has taken meanwhile (created
// again after the index was lost) comes back under NAME.<its id's first
// 8 hex digits>, listed in Renamed, so neither lineage is lost. Staging
// changes never committed are not in the store and come back empty: a rebuilt volume's staging starts at its latest
// revision. Layers whose revision record is missing (a commit that did
// not finish) are skipped, and revisions removed by RemoveRevision stay
// removed.
func (r *Repo) RebuildFrom(ctx context.Context, walk WalkFunc) (RebuildReport, error) {
	var rep RebuildReport
	type layerChunk struct {
		id   chunk.ID
		vid  volID
		seq  uint64
		data []byte
	}
	vols := map[volID]volRecord{}
	revs := map[volID]map[uint64]revRecord{}
	pruned := map[volID][]prunedRecord{}
	type protectMark struct {
		id  chunk.ID
		rec protectRecord
	}
	protects := map[string]protectMark{} // volume id + "/" + revision id
	var layerChunks []layerChunk
	err := walk(ctx, chunk.KindMeta, func(id chunk.ID, data []byte) error {
		switch {
		case bytes.HasPrefix(data, []byte(metaRevisionMagic)):
			var rec struct {
				Volume   volRecord `json:"volume"`
				Revision revRecord `json:"revision"`
			}
			if err := json.Unmarshal(data[len(metaRevisionMagic):], &rec); err != nil {
				return fmt.Errorf("meta chunk %s: %w", id.Short(), err)
			}
			var vid volID
			if b, err := hex.DecodeString(rec.Volume.ID); err != nil || len(b) != len(vid) {
				return fmt.Errorf("meta chunk %s: bad volume id", id.Short())
			} else {
				copy(vid[:], b)
			}
			vols[vid] = rec.Volume
			if revs[vid] == nil {
				revs[vid] = map[uint64]revRecord{}
			}
			// The chunk cannot list its own id; add it back.
			rec.Revision.Meta = append(rec.Revision.Meta, id)
			revs[vid][rec.Revision.Seq] = rec.Revision
		case bytes.HasPrefix(data, []byte(metaPrunedMagic)):
			var pr prunedRecord
			if err := json.Unmarshal(data[len(metaPrunedMagic):], &pr); err != nil {
				return fmt.Errorf("meta chunk %s: %w", id.Short(), err)
			}
			vid, ok := parseVolID(pr.Volume)
			if !ok {
				return fmt.Errorf("meta chunk %s: bad volume id", id.Short())
			}
			pr.Marker = id
			pruned[vid] = append(pruned[vid], pr)
		case bytes.HasPrefix(data, []byte(metaProtectMagic)):
			var pr protectRecord
			if err := json.Unmarshal(data[len(metaProtectMagic):], &pr); err != nil {
				return fmt.Errorf("meta chunk %s: %w", id.Short(), err)
			}
			k := pr.Volume + "/" + pr.ID
			if cur, ok := protects[k]; !ok || pr.At > cur.rec.At {
				protects[k] = protectMark{id, pr}
			}
		case bytes.HasPrefix(data, []byte(metaLayerMagic)):
			b := data[len(metaLayerMagic):]
			if len(b) < 16 {
				return fmt.Errorf("meta chunk %s: short layer header", id.Short())
			}
			lc := layerChunk{id: id}
			copy(lc.vid[:], b)
			lc.seq = binary.BigEndian.Uint64(b[8:])
			lc.data = append([]byte(nil), b[16:]...)
			layerChunks = append(layerChunks, lc)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("rebuild layers: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	skip := map[volID]bool{}
	taken := map[string]bool{}
	for name := range r.vols {
		taken[name] = true
	}
	for vid, rec := range vols {
		cur, ok := r.vols[rec.Name]
		switch {
		case !ok:
		case cur.rec.ID == rec.ID:
			skip[vid] = true
		default:
			name := rec.Name + "." + rec.ID[:8]
			for i := 2; taken[name]; i++ {
				name = fmt.Sprintf("%s.%s-%d", rec.Name, rec.ID[:8], i)
			}
			rep.Renamed = append(rep.Renamed, [2]string{rec.Name, name})
			r.log.Warn("rebuilt volume's name is taken by another volume: renamed", "volume", rec.Name, "as", name)
			rec.Name = name
			vols[vid] = rec
		}
		taken[rec.Name] = true
	}
	// Removed revisions stay removed; the layer chunks that count are
	// those of surviving revisions and those kept for removed ones (a
	// commit that never finished left others behind).
	valid := map[chunk.ID]bool{}
	for vid, prs := range pruned {
		for _, pr := range prs {
			for seq, rr := range revs[vid] {
				if rr.ID == pr.ID {
					delete(revs[vid], seq)
				}
			}
			for _, id := range pr.Keep {
				valid[id] = true
			}
		}
	}
	for _, m := range revs {
		for _, rr := range m {
			for _, id := range rr.Meta {
				valid[id] = true
			}
		}
	}
	maxIno := map[volID]uint64{}
	wb := r.db.NewWriteBatch()
	defer wb.Cancel()
	for _, lc := range layerChunks {
		if skip[lc.vid] || !valid[lc.id] {
			continue
		}
		b := lc.data
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return rep, fmt.Errorf("rebuild layers: corrupt layer record")
			}
			rk := b[k : k+int(n)]
			b = b[k+int(n):]
			n, k = binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n || len(rk) < 9 {
				return rep, fmt.Errorf("rebuild layers: corrupt layer record")
			}
			val := b[k : k+int(n)]
			b = b[k+int(n):]
			if err := wb.Set(verKey(lc.vid, rk, lc.seq), append([]byte(nil), val...)); err != nil {
				return rep, fmt.Errorf("rebuild layers: %w", err)
			}
			if err := wb.Set(touchedKey(lc.vid, lc.seq, rk), nil); err != nil {
				return rep, fmt.Errorf("rebuild layers: %w", err)
			}
			if rk[0] == recAttr {
				maxIno[lc.vid] = max(maxIno[lc.vid], binary.BigEndian.Uint64(rk[1:]))
			}
		}
	}
	var rebuilt []*volume
	for vid, rec := range vols {
		if skip[vid] {
			continue
		}
		v, err := r.newVolume(rec)
		if err != nil {
			return rep, err
		}
		var last uint64
		for seq, rr := range revs[vid] {
			rr.Volume = rec.Name
			if m, ok := protects[rec.ID+"/"+rr.ID]; ok {
				rr.Protected, rr.Protect = m.rec.Protected, m.id
			}
			b, err := json.Marshal(rr)
			if err != nil {
				return rep, err
			}
			if err := wb.Set(revisionKey(vid, seq), b); err != nil {
				return rep, fmt.Errorf("rebuild layers: %w", err)
			}
			last = max(last, seq)
		}
		for _, pr := range pruned[vid] {
			pb, err := json.Marshal(pr)
			if err != nil {
				return rep, err
			}
			if err := wb.Set(prunedKey(vid, pr.Seq), pb); err != nil {
				return rep, fmt.Errorf("rebuild layers: %w", err)
			}
			last = max(last, pr.Seq)
		}
		v.nextIno = max(maxIno[vid]+1, uint64(RootIno)+1)
		v.inoLimit = v.nextIno
		v.seq.Store(last + 1)
		vb, err := json.Marshal(rec)
		if err != nil {
			return rep, err
		}
		if err := wb.Set(volumeKey(rec.Name), vb); err != nil {
			return rep, fmt.Errorf("rebuild layers: %w", err)
		}
		if err := wb.Set(stateKey(vid), encodeState(v.nextIno, last+1)); err != nil {
			return rep, fmt.Errorf("rebuild layers: %w", err)
		}
		rebuilt = append(rebuilt, v)
	}
	if err := wb.Flush(); err != nil {
		return rep, fmt.Errorf("rebuild layers: %w", err)
	}
	if err := r.db.Sync(); err != nil {
		return rep, fmt.Errorf("rebuild layers: sync index: %w", err)
	}
	// Layers kept for removed revisions come back whole; drop the
	// versions no surviving revision or staging sees, as prune did.
	for _, v := range rebuilt {
		points := []uint64{v.seq.Load()}
		for seq := range revs[v.id] {
			points = append(points, seq)
		}
		sort.Slice(points, func(i, j int) bool { return points[i] < points[j] })
		_, _, dels, err := v.sweep(ctx, 1, v.seq.Load()-1, points, false)
		if err == nil {
			err = r.deleteKeys(dels)
		}
		if err != nil {
			return rep, fmt.Errorf("rebuild layers: %w", err)
		}
		r.vols[v.rec.Name] = v
	}
	return rep, nil
}

// RebuildReport is what RebuildFrom changed beyond restoring records.
type RebuildReport struct {
	// Renamed lists volumes brought back under a new name, as
	// {old name, new name}: a different volume had taken the old one.
	Renamed [][2]string
}

// References calls fn once for every chunk reference the layers hold
// (each live extent-map or block version's chunks, each revision's meta
// chunks), so a rebuilt store index can restore reference counts. Staging
// buffers not yet flushed hold none.
func (r *Repo) References(ctx context.Context, fn func(id chunk.ID) error) error {
	if err := r.flushPendingAll(); err != nil {
		return fmt.Errorf("references: %w", err)
	}
	return r.db.View(func(txn *badger.Txn) error {
		err := eachChunkRecord(ctx, txn, func(_ volID, rk []byte, _ uint64, val []byte) error {
			ids, err := recordChunks(rk[0], val)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if err := fn(id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		popts := badger.DefaultIteratorOptions
		popts.Prefix = []byte(pfxPruned)
		pit := txn.NewIterator(popts)
		defer pit.Close()
		for pit.Rewind(); pit.Valid(); pit.Next() {
			b, err := pit.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var pr prunedRecord
			if err := json.Unmarshal(b, &pr); err != nil {
				return fmt.Errorf("decode pruned record: %w", err)
			}
			for _, id := range append(pr.Keep, pr.Marker) {
				if err := fn(id); err != nil {
					return err
				}
			}
		}
		ropts := badger.DefaultIteratorOptions
		ropts.Prefix = []byte(pfxRevision)
		rit := txn.NewIterator(ropts)
		defer rit.Close()
		for rit.Rewind(); rit.Valid(); rit.Next() {
			b, err := rit.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var rr revRecord
			if err := json.Unmarshal(b, &rr); err != nil {
				return fmt.Errorf("decode revision: %w", err)
			}
			for _, id := range rr.refs() {
				if err := fn(id); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
