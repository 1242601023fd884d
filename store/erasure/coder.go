package erasure

import (
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Coder encodes segments into shard files and reconstructs lost shards.
type Coder struct {
	k, m int
	enc  reedsolomon.Encoder
	// serial folds EncodeEach's data regions into the parity on the
	// calling goroutine: the store seals segments in parallel already
	// (one sealer per core), so splitting each region across goroutines
	// would only add handoffs.
	serial reedsolomon.Encoder
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
		if c.serial, err = reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1)); err != nil {
			return nil, fmt.Errorf("erasure coder %d+%d: %w", k, m, err)
		}
	}
	return c, nil
}

// K returns the number of data shards.
func (c *Coder) K() int { return c.k }

// M returns the number of parity shards.
func (c *Coder) M() int { return c.m }

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

// EncodeEach encodes segment segID of segLen bytes into K+M shard files
// without holding the segment in memory as a whole. read(i, region) fills data shard i's region: the L segment bytes from
// i*L, zeros past segLen. put(i, parts) writes shard file i as parts back
// to back and must be done with them when it returns, since the region is
// refilled for the next data shard; data shards come first, in order, then
// parity, whose files accumulate (EncodeIdx) as the data goes by. So the
// segment passes through one region-sized buffer instead of being held in
// full. The bytes put are exactly those of encoding the whole segment at once
// (the test's Encode).
func (c *Coder) EncodeEach(segID uint64, segLen int64, read func(i int, region []byte) error, put func(i int, parts [][]byte) error) error {
	L := ShardLen(segLen, c.k)
	size := FileSize(L)
	region := make([]byte, L)
	parity := make([][]byte, c.m)   // whole parity files
	pregions := make([][]byte, c.m) // their data regions, zero to start
	for j := range parity {
		parity[j] = make([]byte, size)
		pregions[j] = parity[j][HeaderSize : HeaderSize+L]
	}
	head := make([]byte, HeaderSize)
	tail := make([]byte, size-HeaderSize-L)
	for i := range c.k {
		if err := read(i, region); err != nil {
			return fmt.Errorf("encode segment %x: data shard %d: %w", segID, i, err)
		}
		if c.m > 0 && L > 0 {
			if err := c.serial.EncodeIdx(region, i, pregions); err != nil {
				return fmt.Errorf("encode segment %x: %w", segID, err)
			}
		}
		finishParts(head, region, tail, Header{K: c.k, M: c.m, Index: i, Segment: segID, SegLen: segLen, DataLen: L})
		if err := put(i, [][]byte{head, region, tail}); err != nil {
			return err
		}
	}
	for j, f := range parity {
		finish(f, Header{K: c.k, M: c.m, Index: c.k + j, Segment: segID, SegLen: segLen, DataLen: L})
		if err := put(c.k+j, [][]byte{f}); err != nil {
			return err
		}
	}
	return nil
}
