package erasure

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

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
func TestEncodePartsMatchesEncode(t *testing.T) {
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
		padded := make([]byte, PaddedLen(int64(tt.n), tt.k))
		copy(padded, seg)
		var parity [][]byte
		for range 2 { // the second round reuses the parity buffers
			files, err := c.EncodeParts(parity, 7, padded, int64(tt.n))
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != tt.k+tt.m {
				t.Fatalf("%+v: %d files", tt, len(files))
			}
			for i, parts := range files {
				if got := bytes.Join(parts, nil); !bytes.Equal(got, want[i]) {
					t.Fatalf("%+v shard %d: parts differ from Encode's file", tt, i)
				}
			}
			var next [][]byte
			for _, parts := range files[tt.k:] {
				next = append(next, parts[0])
			}
			for j := range parity {
				if len(next[j]) > 0 && &next[j][0] != &parity[j][0] {
					t.Fatalf("%+v: parity buffer %d not reused", tt, j)
				}
			}
			parity = next
		}
		if tt.n > 0 {
			if _, err := c.EncodeParts(nil, 7, padded[:len(padded)-1], int64(tt.n)); err == nil {
				t.Fatalf("%+v: short padding accepted", tt)
			}
		}
	}
}

// BenchmarkEncodeParts encodes a default-sized (32 MiB) segment at 4+2,
// checksums included, reusing the parity buffers.
func BenchmarkEncodeParts(b *testing.B) {
	c, _ := New(4, 2)
	const n = 32<<20 + 1000
	seg := make([]byte, PaddedLen(n, 4))
	copy(seg, segment(n, 1))
	var parity [][]byte
	b.SetBytes(n)
	for b.Loop() {
		files, err := c.EncodeParts(parity, 1, seg, n)
		if err != nil {
			b.Fatal(err)
		}
		parity = [][]byte{files[4][0], files[5][0]}
	}
}
