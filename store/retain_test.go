package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
)

// TestRetain: a retained chunk holds one more reference, wherever it
// lives (the open segment or the index), so it survives one Release and
// GC; the reference is durable at Flush; an unknown id or one in a lost
// segment fails with ErrNotFound and adds no reference to any id.
func TestRetain(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("a chunk kept while its file is rewritten "), 500)
	other := bytes.Repeat([]byte("another chunk "), 700)
	for _, tc := range []struct {
		name     string
		sealed   bool // seal before Retain: the chunk is in the index, not in memory
		reopen   bool // close and open the store after Retain and Flush
		lose     bool // lose the chunk's segment beyond parity before Retain
		unknown  bool // retain an unknown id after the chunk's
		copies   int  // occurrences of the chunk passed to Retain; 0 means 2
		wantErr  error
		wantRefs int64 // index references after Retain, one Release and Seal
	}{
		{name: "open segment", wantRefs: 1},
		{name: "indexed", sealed: true, wantRefs: 1},
		{name: "indexed, reopened", sealed: true, reopen: true, wantRefs: 1},
		{name: "open segment, reopened", reopen: true, wantRefs: 1},
		{name: "unknown id", sealed: true, unknown: true, wantErr: ErrNotFound, wantRefs: 0},
		{name: "unknown id, open segment", unknown: true, wantErr: ErrNotFound, wantRefs: 0},
		// The unknown id comes in a later batch than the first copies.
		{name: "unknown id, second batch", sealed: true, unknown: true, copies: retainBatch + 10, wantErr: ErrNotFound, wantRefs: 0},
		{name: "unknown id, second batch, open segment", unknown: true, copies: retainBatch + 10, wantErr: ErrNotFound, wantRefs: 0},
		{name: "lost segment", sealed: true, lose: true, wantErr: ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, cfg := testRepo(t, 2, 1)
			s := openStore(t, dir, cfg, Options{})
			id, _, err := s.Put(ctx, chunk.KindData, data)
			if err != nil {
				t.Fatal(err)
			}
			// A second chunk in the same segment keeps it from being
			// deleted whole once data's references are gone.
			if _, _, err := s.Put(ctx, chunk.KindData, other); err != nil {
				t.Fatal(err)
			}
			if tc.sealed {
				if err := s.Seal(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if tc.lose {
				loc, _, err := s.locate(id)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 2 {
					if err := os.Remove(filepath.Join(dir, "shards", strconv.Itoa(i), segName(loc.Segment))); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.Get(ctx, id); err == nil {
					t.Fatal("Get of the lost chunk succeeded")
				}
			}
			var ids []chunk.ID
			for range max(tc.copies, 2) {
				ids = append(ids, id)
			}
			if tc.unknown {
				ids = append(ids, chunk.ID{0xde, 0xad})
			}
			err = s.Retain(ctx, ids)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Retain(%d ids) = %v, want %v", len(ids), err, tc.wantErr)
			}
			if tc.lose {
				return
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.reopen {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openStore(t, dir, cfg, Options{})
			}
			// Put's reference plus, if Retain succeeded, two.
			if err := s.Release(ctx, []chunk.ID{id}); err != nil {
				t.Fatal(err)
			}
			if err == nil {
				if err := s.Release(ctx, []chunk.ID{id}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Seal(ctx); err != nil {
				t.Fatal(err)
			}
			if got := indexRefs(t, s)[id]; got != tc.wantRefs {
				t.Fatalf("after Retain and Release: %d references, want %d", got, tc.wantRefs)
			}
			if _, err := s.GC(ctx, GCOptions{MaxUnused: 0.01}); err != nil {
				t.Fatal(err)
			}
			got, gerr := s.Get(ctx, id)
			switch {
			case tc.wantRefs > 0 && (gerr != nil || !bytes.Equal(got, data)):
				t.Fatalf("retained chunk after GC: %v", gerr)
			case tc.wantRefs == 0 && !errors.Is(gerr, ErrNotFound):
				t.Fatalf("chunk without references after GC: %v, want ErrNotFound", gerr)
			}
		})
	}
}
