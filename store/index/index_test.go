package index

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

func TestRecords(t *testing.T) {
	c := Chunk{Segment: 1 << 40, Offset: 7, Length: 1 << 20, Kind: chunk.KindMeta, Refs: 12345}
	got, err := ParseChunk(c.Marshal())
	if err != nil || got != c {
		t.Fatalf("chunk round trip: %+v, %v; want %+v", got, err, c)
	}
	s := Segment{SegLen: 33 << 20, K: 4, M: 2, Chunks: 30}
	gs, err := ParseSegment(s.Marshal())
	if err != nil || gs != s {
		t.Fatalf("segment round trip: %+v, %v; want %+v", gs, err, s)
	}
	if id, ok := SegmentIDFromKey(SegmentKey(99)); !ok || id != 99 {
		t.Fatal("segment key round trip")
	}
	var cid chunk.ID
	cid[3] = 9
	if id, ok := ChunkIDFromKey(ChunkKey(cid)); !ok || id != cid {
		t.Fatal("chunk key round trip")
	}
	if _, err := ParseChunk([]byte{1, 2}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short chunk record: %v", err)
	}
}

func TestOpenEncryptedAndWrongKey(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{1}, 32)
	db, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch(db)
	for i := range 20000 {
		var id chunk.ID
		id[0], id[1] = byte(i), byte(i>>8)
		if err := b.Set(ChunkKey(id), Chunk{Refs: int64(i)}.Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, bytes.Repeat([]byte{2}, 32), nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with wrong key: %v, want ErrWrongKey", err)
	}
	db, err = Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(txn *badger.Txn) error {
		var id chunk.ID
		id[0], id[1] = byte(19999%256), byte(19999>>8)
		c, found, err := GetChunk(txn, id)
		if err != nil || !found || c.Refs != 19999 {
			t.Fatalf("GetChunk = %+v, %v, %v", c, found, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCacheReport(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want bool
	}{
		{"badger: Block cache might be too small. Metrics: hit: 1 miss: 2", true},
		{"badger: Cache life expectancy (in seconds): \n -- Histogram:", true},
		{"badger: Failed to sync: no space left on device", false},
	} {
		if got := cacheReport(tt.msg); got != tt.want {
			t.Errorf("cacheReport(%q) = %v, want %v", tt.msg, got, tt.want)
		}
	}
}
