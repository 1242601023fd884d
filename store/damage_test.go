package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/erasure"
)

func shardFiles(t *testing.T, dir string, i int) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "shards", fmt.Sprint(i), "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoseShardDirs(t *testing.T) {
	for _, lost := range [][]int{{0, 1}, {2, 5}, {4, 5}, {1, 3}} {
		t.Run(fmt.Sprint(lost), func(t *testing.T) {
			ctx := context.Background()
			dir, cfg := testRepo(t, 4, 2)
			s := openStore(t, dir, cfg, Options{})
			want := putRandom(t, s, 3, 40, 150_000)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Seal the journaled tail too, so every chunk is in shards.
			s = openStore(t, dir, cfg, Options{})
			s.Close()
			for _, i := range lost {
				os.RemoveAll(filepath.Join(dir, "shards", fmt.Sprint(i)))
			}
			// M missing dirs: degraded, not refused (TestDegradedShardDirs
			// covers that mode); here the dirs come back empty.
			ds, err := Open(ctx, dir, cfg, crypt.NewKeys(testMaster), Options{})
			if err != nil {
				t.Fatalf("Open with %d of 4+2 shard dirs missing: %v", len(lost), err)
			}
			if got := ds.MissingShardDirs(); !slices.Equal(got, lost) {
				t.Fatalf("MissingShardDirs = %v, want %v", got, lost)
			}
			ds.Close()
			for _, i := range lost {
				os.Mkdir(filepath.Join(dir, "shards", fmt.Sprint(i)), 0o700)
			}
			s = openStore(t, dir, cfg, Options{})
			checkAll(t, s, want)
			var lastDone, lastTotal int64
			rep, err := s.Scrub(ctx, ScrubOptions{Repair: true, ReadData: 100, Progress: func(done, total int64) {
				if done != lastDone+1 {
					t.Errorf("progress %d after %d", done, lastDone)
				}
				lastDone, lastTotal = done, total
			}})
			if err != nil {
				t.Fatal(err)
			}
			if lastDone != rep.Segments || lastTotal != rep.Segments || rep.Segments < 2 {
				t.Fatalf("progress ended at %d/%d for %d segments", lastDone, lastTotal, rep.Segments)
			}
			if len(rep.Damaged) == 0 || !rep.OK() {
				t.Fatalf("scrub: %d damaged, OK=%v; want damage found and repaired", len(rep.Damaged), rep.OK())
			}
			for _, d := range rep.Damaged {
				if !slices.Equal(d.Missing, lost) {
					t.Fatalf("segment %x: missing %v, want %v", d.Segment, d.Missing, lost)
				}
			}
			rep, err = s.Scrub(ctx, ScrubOptions{ReadData: 100})
			if err != nil || len(rep.Damaged) != 0 || rep.ChunksChecked < int64(len(want)) {
				t.Fatalf("second scrub: %+v, %v", rep, err)
			}
			// Repaired shards carry the data: lose two other dirs.
			others := []int{}
			for i := range 6 {
				if !slices.Contains(lost, i) && len(others) < 2 {
					others = append(others, i)
				}
			}
			for _, i := range others {
				for _, f := range shardFiles(t, dir, i) {
					os.Remove(f)
				}
			}
			checkAll(t, s, want)
			// One more lost dir is beyond parity.
			for _, f := range shardFiles(t, dir, lost[0]) {
				os.Remove(f)
			}
			// Chunks whose data shard survives still read; the rest
			// fail with a DamageError, never with wrong data.
			damaged := 0
			for id, b := range want {
				got, err := s.Get(ctx, id)
				var de *DamageError
				switch {
				case errors.As(err, &de) && de.Chunk == id:
					damaged++
				case err != nil:
					t.Fatalf("Get with 3 shards lost = %v, want DamageError naming the chunk", err)
				case !bytes.Equal(got, b):
					t.Fatal("Get with 3 shards lost returned wrong data")
				}
			}
			if damaged == 0 {
				t.Fatal("no DamageError with 3 of 6 shard dirs lost")
			}
			rep, err = s.Scrub(ctx, ScrubOptions{Repair: true})
			if err != nil || rep.OK() || !rep.Damaged[0].Lost {
				t.Fatalf("scrub with 3 shards lost: OK=%v err=%v, want lost segments", rep.OK(), err)
			}
		})
	}
}

func TestBitFlipsAndTruncation(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 5, 30, 120_000)
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	s.Close()
	files0 := shardFiles(t, dir, 0)
	files2 := shardFiles(t, dir, 2)
	r := rand.New(rand.NewPCG(5, 5))
	for _, f := range files0 {
		b, _ := os.ReadFile(f)
		dataLen := len(b) - erasure.HeaderSize
		for range 3 {
			b[erasure.HeaderSize+r.IntN(dataLen/2)] ^= 1 << r.IntN(8)
		}
		os.WriteFile(f, b, 0o600)
	}
	for _, f := range files2 {
		fi, _ := os.Stat(f)
		os.Truncate(f, fi.Size()/2)
	}
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	corrupt, unusable := 0, 0
	for _, d := range rep.Damaged {
		if len(d.Corrupt[0]) > 0 {
			corrupt++
		}
		if slices.Contains(d.Unusable, 2) {
			unusable++
		}
	}
	if corrupt == 0 || unusable != len(files2) {
		t.Fatalf("scrub found %d segments with bad blocks in shard 0 and %d truncated shard 2 (want %d)", corrupt, unusable, len(files2))
	}
	if rep, err = s.Scrub(ctx, ScrubOptions{Repair: true}); err != nil || !rep.OK() {
		t.Fatalf("repair: OK=%v, %v", rep.OK(), err)
	}
	if rep, err = s.Scrub(ctx, ScrubOptions{ReadData: 100}); err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("after repair: %d damaged, %v", len(rep.Damaged), err)
	}

	// The same block bad in three shards: beyond parity, never wrong data.
	for _, i := range []int{0, 1, 4} {
		for _, f := range shardFiles(t, dir, i) {
			b, _ := os.ReadFile(f)
			for off := erasure.HeaderSize; off < len(b)-64 && off < erasure.HeaderSize+3*erasure.BlockSize; off += 1000 {
				b[off] ^= 0xff
			}
			os.WriteFile(f, b, 0o600)
		}
	}
	damaged := 0
	for id, b := range want {
		got, err := s.Get(ctx, id)
		var de *DamageError
		switch {
		case errors.As(err, &de):
			damaged++
		case err != nil:
			t.Fatalf("Get: %v", err)
		case !bytes.Equal(got, b):
			t.Fatal("Get returned wrong data")
		}
	}
	if damaged == 0 {
		t.Fatal("no chunk reported damaged with 3 of 6 shards corrupt")
	}
}

func TestRebuildIndex(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 3, 1)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 7, 40, 100_000)
	meta, _, err := s.Put(ctx, chunk.KindMeta, []byte("layer record"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	before, _ := s.Stats(ctx)
	s.Close()
	// Lose the whole index: a fresh one is created on Open.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	var calls int64
	if err := s.RebuildIndex(ctx, func(done, total int64) { calls = total }); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Stats(ctx)
	if after.Chunks != before.Chunks || after.Segments != before.Segments || calls != before.Segments {
		t.Fatalf("after rebuild %+v, before %+v (progress total %d)", after, before, calls)
	}
	checkAll(t, s, want)
	var metas []chunk.ID
	if err := s.Walk(ctx, chunk.KindMeta, func(id chunk.ID, data []byte) error {
		metas = append(metas, id)
		if string(data) != "layer record" {
			t.Errorf("Walk data %q", data)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(metas) != 1 || metas[0] != meta {
		t.Fatalf("Walk(meta) = %v", metas)
	}
	for id := range want {
		if r := refsOf(t, s, id); r != 1 {
			t.Fatalf("refs after rebuild = %d, want 1", r)
		}
		break
	}
	// New segments after a rebuild do not reuse ids.
	more := putRandom(t, s, 8, 20, 100_000)
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	checkAll(t, s, more)
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	keep := putRandom(t, s, 11, 30, 100_000)
	drop := putRandom(t, s, 12, 60, 100_000)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	var ids []chunk.ID
	for id := range drop {
		ids = append(ids, id)
	}
	if err := s.Release(ctx, ids); err != nil {
		t.Fatal(err)
	}
	// An orphan left by a crash between shard write and index commit
	// (segment ids start at 1, so 0 is in no index).
	for _, i := range []string{"0", "2"} {
		if err := os.WriteFile(filepath.Join(dir, "shards", i, "0000000000000000"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := s.Scrub(ctx, ScrubOptions{}); err != nil || !slices.Equal(rep.Orphans, []uint64{0}) {
		t.Fatalf("scrub orphans = %v, %v; want [0]", rep.Orphans, err)
	}
	before, _ := s.Stats(ctx)
	gs, err := s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Stats(ctx)
	if gs.BytesFreed <= 0 || gs.ChunksFreed != len(drop) || gs.OrphansDeleted != 1 || after.ShardBytes >= before.ShardBytes || after.Chunks != int64(len(keep)) {
		t.Fatalf("GC = %+v; stats before %+v after %+v", gs, before, after)
	}
	for id := range drop {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of freed chunk = %v", err)
		}
	}
	checkAll(t, s, keep)
	// A freed chunk put again is stored again.
	for id, b := range drop {
		id2, added, err := s.Put(ctx, chunk.KindData, b)
		if err != nil || !added || id2 != id {
			t.Fatalf("re-Put of freed chunk: added=%v err=%v", added, err)
		}
		break
	}
	rep, err := s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || len(rep.Damaged) != 0 || len(rep.Orphans) != 0 {
		t.Fatalf("scrub after GC: %+v, %v", rep, err)
	}
	s.Close()
	// Short sessions leave small segments; GC merges them.
	small := map[[32]byte][]byte{}
	for i := range 4 {
		s = openStore(t, dir, cfg, Options{})
		for id, b := range putRandom(t, s, uint64(20+i), 2, 10_000) {
			small[id] = b
		}
		s.Close()
	}
	s = openStore(t, dir, cfg, Options{})
	before, _ = s.Stats(ctx)
	gs, err = s.GC(ctx, GCOptions{MaxUnused: 1})
	after, _ = s.Stats(ctx)
	if err != nil || gs.SegmentsRepacked < 4 || after.Segments > before.Segments-3 {
		t.Fatalf("GC of small segments: %+v, %v; segments %d → %d", gs, err, before.Segments, after.Segments)
	}
	checkAll(t, s, keep)
	checkAll(t, s, small)
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, keep)
	checkAll(t, s, small)
}

// TestTamperWithValidChecksums alters shards and fixes their checksums, as
// an attacker (not a bad disk) would. One altered data shard: Get rebuilds
// the chunk from the others once it fails to authenticate, and scrub's
// data check names it. Data and parity altered: Get fails with a
// DamageError and never returns the altered bytes.
func TestTamperWithValidChecksums(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	data := randBytes(rand.New(rand.NewPCG(8, 8)), 30_000)
	id, _, err := s.Put(ctx, chunk.KindData, data)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{}) // seals the journaled segment
	s.Close()
	tamper := func(i int) {
		t.Helper()
		f := shardFiles(t, dir, i)[0]
		b, _ := os.ReadFile(f)
		h, err := erasure.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		b[erasure.HeaderSize+100] ^= 0x55
		// Recompute the block checksum, the table checksum and the footer.
		file := make([]byte, len(b))
		copy(file, b)
		erasure.Finish(file, h)
		os.WriteFile(f, file, 0o600)
	}
	tamper(0)
	s = openStore(t, dir, cfg, Options{})
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("checksum scrub of a consistently tampered shard: %+v, %v (want nothing found)", rep.Damaged, err)
	}
	rep, err = s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || len(rep.Damaged) != 1 || !slices.Contains(rep.Damaged[0].BadChunks, id) {
		t.Fatalf("data scrub of tampered chunk: %+v, %v", rep.Damaged, err)
	}
	got, err := s.Get(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get with one tampered data shard: %v", err)
	}
	s.Close()
	tamper(2)
	s = openStore(t, dir, cfg, Options{})
	got, err = s.Get(ctx, id)
	var de *DamageError
	if !errors.As(err, &de) || !errors.Is(err, crypt.ErrAuth) || got != nil {
		t.Fatalf("Get with data and parity tampered = %d bytes, %v; want DamageError wrapping crypt.ErrAuth", len(got), err)
	}
}
