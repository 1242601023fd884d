package layers

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// ChunkUse says where a chunk's data appears: a file (fs volumes) or a
// byte range of the disk (block volumes), and which revisions (ids, oldest
// first) and whether the staging head see it there.
type ChunkUse struct {
	Chunk     chunk.ID
	Volume    string
	Where     string // "path/in/volume" or "disk.img bytes A-B"
	Revisions []string
	Staging   bool
}

func (u ChunkUse) String() string {
	var seen []string
	seen = append(seen, u.Revisions...)
	if u.Staging {
		seen = append(seen, "staging")
	}
	return fmt.Sprintf("%s: %s (%s)", u.Volume, u.Where, strings.Join(seen, ", "))
}

// ChunkUsers finds what holds the given chunks, for damage reports that
// name files and revisions rather than chunk ids. It reads every extent
// map and block record once, so it is for the rare case of damage, not for
// a request path. Versions no revision or staging sees (kept for none)
// are left out.
func (r *Repo) ChunkUsers(ctx context.Context, ids []chunk.ID) ([]ChunkUse, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if err := r.flushPendingAll(); err != nil {
		return nil, fmt.Errorf("chunk users: %w", err)
	}
	want := make(map[chunk.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	byID := r.volumesByID()

	// hit is a record version that holds a wanted chunk, with the seqs
	// that see it: [seq, until).
	type hit struct {
		v          *volume
		rk         []byte
		seq, until uint64
		id         chunk.ID
		off, n     int64
	}
	var hits []hit
	var lastVid volID
	var lastRK []byte
	var newer uint64 // seq of the newer version of lastRK, if it is the same record
	err := r.db.View(func(txn *badger.Txn) error {
		return eachChunkRecord(ctx, txn, func(vid volID, rk []byte, seq uint64, val []byte) error {
			until := ^uint64(0)
			if vid == lastVid && string(rk) == string(lastRK) {
				until = newer // versions come newest first
			}
			lastVid, lastRK, newer = vid, rk, seq
			v := byID[vid]
			if v == nil || len(val) == 0 || val[0] != valLive {
				return nil
			}
			idx := int64(binary.BigEndian.Uint64(rk[1:]))
			if rk[0] == recBlock {
				ids, err := recordChunks(recBlock, val)
				if err == nil && want[ids[0]] {
					bs := int64(v.rec.BlockSize)
					hits = append(hits, hit{v: v, rk: rk, seq: seq, until: until, id: ids[0], off: idx * bs, n: bs})
				}
				return err
			}
			es, err := decodeExtents(val[1:])
			if err != nil {
				return err
			}
			for _, e := range es {
				if want[e.ID] {
					hits = append(hits, hit{v: v, rk: rk, seq: seq, until: until, id: e.ID, off: e.Off, n: e.Len})
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("chunk users: %w", err)
	}

	var out []ChunkUse
	revsOf := map[*volume][]revRecord{}
	for _, h := range hits {
		revs, ok := revsOf[h.v]
		if !ok {
			var err error
			if revs, err = h.v.revisions(); err != nil {
				return nil, err
			}
			revsOf[h.v] = revs
		}
		u := ChunkUse{Chunk: h.id, Volume: h.v.rec.Name}
		var at uint64 // a seq that sees the version, to find its path
		for _, rr := range revs {
			if rr.Seq >= h.seq && rr.Seq < h.until {
				u.Revisions = append(u.Revisions, rr.ID)
				at = rr.Seq
			}
		}
		if s := h.v.seq.Load(); s >= h.seq && s < h.until {
			u.Staging = true
			at = s
		}
		if at == 0 {
			continue // kept for nobody: prune's leftovers
		}
		if h.rk[0] == recBlock {
			u.Where = fmt.Sprintf("disk.img bytes %d-%d", h.off, h.off+h.n-1)
		} else {
			ino := Ino(binary.BigEndian.Uint64(h.rk[1:]))
			u.Where = h.v.pathOf(ctx, ino, at)
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Volume != out[j].Volume {
			return out[i].Volume < out[j].Volume
		}
		return out[i].Where < out[j].Where
	})
	return out, nil
}

// pathOf names inode ino as seen at seq by following parents up to the
// root (Tree.Path); "inode N" when a step cannot be found (files written
// before inodes recorded their directory, or whose recorded link went).
func (v *volume) pathOf(ctx context.Context, ino Ino, seq uint64) string {
	p, err := (&Tree{tree{v: v, seq: seq}}).Path(ctx, ino)
	if err != nil {
		return fmt.Sprintf("inode %d", ino)
	}
	return p
}
