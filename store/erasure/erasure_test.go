package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Encode splits segment seg (id segID) into K+M complete shard files, all
// in memory at once: the plain form of EncodeEach, kept here as the
// reference the tests hold it to and as a fixture for the decoding tests.
func (c *Coder) Encode(segID uint64, seg []byte) ([][]byte, error) {
	segLen := int64(len(seg))
	L := ShardLen(segLen, c.k)
	files := make([][]byte, c.k+c.m)
	regions := make([][]byte, c.k+c.m)
	for i := range files {
		files[i] = make([]byte, FileSize(L))
		regions[i] = files[i][HeaderSize : HeaderSize+L]
		if i < c.k {
			lo := min(int64(i)*L, segLen)
			copy(regions[i], seg[lo:min(lo+L, segLen)]) // the rest is padding: zeros
		}
	}
	if c.m > 0 && L > 0 {
		if err := c.enc.Encode(regions); err != nil {
			return nil, fmt.Errorf("encode segment %x: %w", segID, err)
		}
	}
	for i := range files {
		finish(files[i], Header{K: c.k, M: c.m, Index: i, Segment: segID, SegLen: segLen, DataLen: L})
	}
	return files, nil
}

func segment(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestEncodeSystematicAndVerify(t *testing.T) {
	for _, tt := range []struct{ k, m, n int }{{4, 2, 1_000_003}, {4, 2, 1}, {1, 0, 70000}, {3, 3, 3 * BlockSize}, {4, 2, 0}} {
		c, err := New(tt.k, tt.m)
		if err != nil {
			t.Fatal(err)
		}
		seg := segment(tt.n, uint64(tt.n))
		files, err := c.Encode(9, seg)
		if err != nil {
			t.Fatal(err)
		}
		L := ShardLen(int64(tt.n), tt.k)
		var joined []byte
		for i := 0; i < tt.k; i++ {
			joined = append(joined, files[i][HeaderSize:HeaderSize+L]...)
		}
		if !bytes.Equal(joined[:tt.n], seg) {
			t.Fatalf("%+v: data shards are not the segment bytes", tt)
		}
		for i, f := range files {
			ch := Verify(f, 9, i, int64(tt.n), tt.k)
			if ch.Err != nil || len(ch.Bad) != 0 {
				t.Fatalf("%+v shard %d: Verify = %+v", tt, i, ch)
			}
			if ch := Verify(f, 10, i, int64(tt.n), tt.k); ch.Err == nil {
				t.Fatalf("%+v shard %d: verified as another segment", tt, i)
			}
		}
	}
}

func TestLocateAndReconstruct(t *testing.T) {
	const k, m = 4, 2
	c, _ := New(k, m)
	seg := segment(5*BlockSize*k+123, 3)
	files, _ := c.Encode(1, seg)
	L := ShardLen(int64(len(seg)), k)
	files[1][HeaderSize+2*BlockSize+5] ^= 0x40 // block 2 of shard 1
	files[4][HeaderSize+0] ^= 1                // block 0 of shard 4 (parity)
	for i, want := range map[int][]int{1: {2}, 4: {0}, 0: nil} {
		ch := Verify(files[i], 1, i, int64(len(seg)), k)
		if ch.Err != nil || len(ch.Bad) != len(want) || (len(want) > 0 && ch.Bad[0] != want[0]) {
			t.Fatalf("shard %d: Bad = %v, %v; want %v", i, ch.Bad, ch.Err, want)
		}
	}
	// Reconstruct the range of block 2 with shards 1 and 3 treated as bad.
	lo, hi := int64(2*BlockSize), int64(3*BlockSize)
	shards := make([][]byte, k+m)
	for i := range shards {
		if i != 1 && i != 3 {
			shards[i] = append([]byte(nil), files[i][HeaderSize+lo:HeaderSize+hi]...)
		}
	}
	if err := c.Reconstruct(shards, true); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shards[1], seg[L+lo:L+hi]) || !bytes.Equal(shards[3], seg[3*L+lo:3*L+hi]) {
		t.Fatal("reconstructed range differs from the segment")
	}
	shards[0], shards[2], shards[5] = nil, nil, nil
	if err := c.Reconstruct(shards, true); err == nil {
		t.Fatal("reconstruct with 3 of 6 shards succeeded")
	}
}

func TestTruncatedAndDamagedFiles(t *testing.T) {
	c, _ := New(2, 1)
	files, _ := c.Encode(5, segment(200_000, 1))
	if ch := Verify(files[0][:len(files[0])-1], 5, 0, 200_000, 2); ch.Err == nil {
		t.Fatal("truncated file verified")
	}
	f := append([]byte(nil), files[0]...)
	f[len(f)-FooterSize-1] ^= 1 // table
	if ch := Verify(f, 5, 0, 200_000, 2); ch.Err == nil {
		t.Fatal("damaged table verified")
	}
	f = append([]byte(nil), files[0]...)
	f[3] ^= 1 // header: data still checks against the expected identity
	if ch := Verify(f, 5, 0, 200_000, 2); len(ch.Bad) != 0 {
		t.Fatalf("damaged header: Bad = %v", ch.Bad)
	}
	if _, err := ParseHeader(f); err == nil {
		t.Fatal("damaged header parsed")
	}
}

// TestEncodePartsMatchesEncode checks that the parts EncodeParts returns,
// written back to back, are byte for byte the files Encode makes (the
// on-disk format), and that parity buffers are reused.
func TestEncodeEachMatchesEncode(t *testing.T) {
	for _, tt := range []struct{ k, m, n int }{{4, 2, 1_000_003}, {4, 2, 1}, {4, 2, 5}, {1, 0, 70000}, {3, 3, 3 * BlockSize}, {4, 2, 0}, {4, 2, 4*BlockSize + 2}} {
		c, err := New(tt.k, tt.m)
		if err != nil {
			t.Fatal(err)
		}
		seg := segment(tt.n, uint64(tt.n)+1)
		want, err := c.Encode(7, seg)
		if err != nil {
			t.Fatal(err)
		}
		L := ShardLen(int64(tt.n), tt.k)
		read := func(i int, region []byte) error {
			lo := min(int64(i)*L, int64(tt.n))
			clear(region[copy(region, seg[lo:min(lo+L, int64(tt.n))]):])
			return nil
		}
		var order []int
		got := make([][]byte, tt.k+tt.m)
		if err := c.EncodeEach(7, int64(tt.n), read, func(i int, parts [][]byte) error {
			order = append(order, i)
			got[i] = bytes.Join(parts, nil) // copies: the region is reused
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if i >= len(order) || order[i] != i {
				t.Fatalf("%+v: shards put in order %v", tt, order)
			}
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%+v shard %d: differs from Encode's file", tt, i)
			}
		}
	}
}

// TestEncodeEachErrors: a failed read or put stops the encoding with the
// cause, and nothing after it is put.
func TestEncodeEachErrors(t *testing.T) {
	c, err := New(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	for _, tt := range []struct {
		name              string
		failRead, failPut int
		wantPuts          int
	}{
		{"read of shard 2", 2, -1, 2},
		{"put of shard 1", -1, 1, 2},
		{"put of parity", -1, 5, 6},
	} {
		puts := 0
		err := c.EncodeEach(1, 100_000, func(i int, region []byte) error {
			if i == tt.failRead {
				return boom
			}
			clear(region)
			return nil
		}, func(i int, parts [][]byte) error {
			puts++
			if i == tt.failPut {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || puts != tt.wantPuts {
			t.Errorf("%s: err %v after %d puts, want boom after %d", tt.name, err, puts, tt.wantPuts)
		}
	}
}

// BenchmarkEncodeEach encodes a default-sized (16 MiB) segment at 4+2,
// checksums included, from memory.
func BenchmarkEncodeEach(b *testing.B) {
	c, _ := New(4, 2)
	const n = 16<<20 + 1000
	seg := segment(n, 1)
	L := ShardLen(n, 4)
	read := func(i int, region []byte) error {
		lo := min(int64(i)*L, n)
		clear(region[copy(region, seg[lo:min(lo+L, n)]):])
		return nil
	}
	b.SetBytes(n)
	for b.Loop() {
		if err := c.EncodeEach(1, n, read, func(int, [][]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
