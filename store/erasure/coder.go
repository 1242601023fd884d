package erasure

import (
	"encoding/binary"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Coder encodes segments into shard files and reconstructs lost shards.
type Coder struct {
	k, m int
	enc  reedsolomon.Encoder
	// rows encodes EncodeParts' 64 KiB block rows on the calling
	// goroutine: rows that small gain nothing from being split across
	// goroutines, and the store seals segments in parallel already.
	rows reedsolomon.Encoder
}

// New returns a Coder for k data and m parity shards.
func New(k, m int) (*Coder, error) {
	c := &Coder{k: k, m: m}
	if m > 0 {
		enc, err := reedsolomon.New(k, m)
		if err != nil {
			return nil, fmt.Errorf("erasure coder %d+%d: %w", k, m, err)
		}
		c.enc = enc
		if c.rows, err = reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1)); err != nil {
			return nil, fmt.Errorf("erasure coder %d+%d: %w", k, m, err)
		}
	}
	return c, nil
}

// K returns the number of data shards.
func (c *Coder) K() int { return c.k }

// M returns the number of parity shards.
func (c *Coder) M() int { return c.m }

// Encode splits segment seg (id segID) into K+M complete shard files.
func (c *Coder) Encode(segID uint64, seg []byte) ([][]byte, error) {
	return c.EncodeInto(nil, segID, seg)
}

// EncodeInto is Encode reusing the buffers of dst (as returned by an
// earlier call) when they are large enough, which spares a large
// allocation and its page faults per segment.
func (c *Coder) EncodeInto(dst [][]byte, segID uint64, seg []byte) ([][]byte, error) {
	segLen := int64(len(seg))
	L := ShardLen(segLen, c.k)
	size := FileSize(L)
	files := make([][]byte, c.k+c.m)
	regions := make([][]byte, c.k+c.m)
	for i := range files {
		if i < len(dst) && int64(cap(dst[i])) >= size {
			files[i] = dst[i][:size]
		} else {
			files[i] = make([]byte, size)
		}
		regions[i] = files[i][HeaderSize : HeaderSize+L]
		if i < c.k {
			lo := min(int64(i)*L, segLen)
			hi := min(lo+L, segLen)
			n := copy(regions[i], seg[lo:hi])
			clear(regions[i][n:]) // padding of the last data shard
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

// PaddedLen returns how long EncodeParts needs the segment buffer to be:
// segLen rounded up to K equal data shards (at most K-1 bytes more).
func PaddedLen(segLen int64, k int) int64 { return int64(k) * ShardLen(segLen, k) }

// EncodeParts is EncodeInto without copying the segment into the data
// shard files: each file is returned as the parts to write back to back,
// and a data shard's data region is a slice of seg itself (a file is
// header | data | checksum table and footer; a parity file is one part,
// reusing parity[j] when large enough, as EncodeInto does). seg must hold
// the segLen segment bytes followed by zeros up to PaddedLen(segLen, K),
// the padding every shard is coded with. The parts alias seg and the
// parity buffers; the bytes written are exactly EncodeInto's.
func (c *Coder) EncodeParts(parity [][]byte, segID uint64, seg []byte, segLen int64) ([][][]byte, error) {
	L := ShardLen(segLen, c.k)
	if int64(len(seg)) != PaddedLen(segLen, c.k) {
		return nil, fmt.Errorf("encode segment %x: %d bytes given for %d padded to %d", segID, len(seg), segLen, PaddedLen(segLen, c.k))
	}
	size := FileSize(L)
	tail := size - HeaderSize - L
	small := make([]byte, int64(c.k)*(HeaderSize+tail))
	files := make([][][]byte, c.k+c.m)
	regions := make([][]byte, c.k+c.m)
	for i := range files {
		if i < c.k {
			head, rest := small[:HeaderSize:HeaderSize], small[HeaderSize:]
			foot := rest[:tail:tail]
			small = rest[tail:]
			regions[i] = seg[int64(i)*L : int64(i+1)*L]
			files[i] = [][]byte{head, regions[i], foot}
			continue
		}
		var f []byte
		if j := i - c.k; j < len(parity) && int64(cap(parity[j])) >= size {
			f = parity[j][:size]
		} else {
			f = make([]byte, size)
		}
		regions[i] = f[HeaderSize : HeaderSize+L]
		files[i] = [][]byte{f}
	}
	// One block row at a time (a BlockSize block of every shard): its
	// parity is computed and its blocks checksummed while the row is in
	// the CPU cache, rather than reading all shards from memory twice.
	tails := make([][]byte, len(files))
	for i, parts := range files {
		if i < c.k {
			tails[i] = parts[2]
		} else {
			tails[i] = parts[0][TableOffset(L):]
		}
	}
	row := make([][]byte, len(files))
	for off := int64(0); off < L; off += BlockSize {
		end := min(off+BlockSize, L)
		for i := range regions {
			row[i] = regions[i][off:end]
		}
		if c.m > 0 {
			if err := c.rows.Encode(row); err != nil {
				return nil, fmt.Errorf("encode segment %x: %w", segID, err)
			}
		}
		blk := int(off / BlockSize)
		for i := range row {
			binary.LittleEndian.PutUint32(tails[i][4*blk:], BlockSum(segID, i, blk, row[i]))
		}
	}
	for i, parts := range files {
		Header{K: c.k, M: c.m, Index: i, Segment: segID, SegLen: segLen, DataLen: L}.Marshal(parts[0][:HeaderSize])
		finishTable(tails[i], L)
	}
	return files, nil
}

// Reconstruct fills in the nil entries of shards (K+M equal-length slices
// of the same shard-local byte range; parity may be recomputed only for
// full ranges). dataOnly restores just the data shards, which is all a read
// needs. It fails if fewer than K entries are present.
func (c *Coder) Reconstruct(shards [][]byte, dataOnly bool) error {
	present := 0
	for _, s := range shards {
		if s != nil {
			present++
		}
	}
	if present < c.k {
		return fmt.Errorf("reconstruct: %d of %d shards good, need %d", present, c.k+c.m, c.k)
	}
	if c.m == 0 {
		return nil
	}
	if dataOnly {
		return c.enc.ReconstructData(shards)
	}
	return c.enc.Reconstruct(shards)
}

// Finish writes header, checksums and footer around a shard file whose data
// region (file[HeaderSize:HeaderSize+L]) is filled, as after a repair.
func Finish(file []byte, h Header) { finish(file, h) }
