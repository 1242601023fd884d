package erasure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Shard file layout constants.
const (
	HeaderSize = 64
	FooterSize = 8
	// BlockSize is the checksum granularity: small enough that a bad
	// sector costs one block's reconstruction, large enough that the
	// table stays at 0.006% of the shard.
	BlockSize = 64 << 10
	version   = 1
)

var (
	headerMagic = []byte("STRATASH")
	footerMagic = []byte("SEND")
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// ErrCorrupt means a shard file's header, table or footer is damaged.
var ErrCorrupt = errors.New("shard file corrupt")

// Header describes one shard file.
type Header struct {
	K, M    int
	Index   int    // shard index 0..K+M-1
	Segment uint64 // segment id
	SegLen  int64  // S: segment bytes (without padding)
	DataLen int64  // L: shard data bytes
}

// ShardLen returns L for a segment of segLen bytes split into k data shards.
func ShardLen(segLen int64, k int) int64 {
	return (segLen + int64(k) - 1) / int64(k)
}

// Blocks returns the number of checksum blocks of a shard with dataLen bytes.
func Blocks(dataLen int64) int {
	return int((dataLen + BlockSize - 1) / BlockSize)
}

// TableOffset returns the file offset of the checksum table.
func TableOffset(dataLen int64) int64 { return HeaderSize + dataLen }

// FileSize returns the size of a shard file with dataLen data bytes.
func FileSize(dataLen int64) int64 {
	return HeaderSize + dataLen + 4*int64(Blocks(dataLen)) + FooterSize
}

// Marshal encodes h into b[:HeaderSize].
func (h Header) Marshal(b []byte) {
	copy(b, headerMagic)
	binary.LittleEndian.PutUint16(b[8:], version)
	binary.LittleEndian.PutUint16(b[10:], uint16(h.K))
	binary.LittleEndian.PutUint16(b[12:], uint16(h.M))
	binary.LittleEndian.PutUint16(b[14:], uint16(h.Index))
	binary.LittleEndian.PutUint64(b[16:], h.Segment)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.SegLen))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.DataLen))
	binary.LittleEndian.PutUint32(b[40:], BlockSize)
	clear(b[44:60])
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
}

// ParseHeader decodes and checks a shard file header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize || !bytes.Equal(b[:8], headerMagic) {
		return Header{}, fmt.Errorf("header: bad magic: %w", ErrCorrupt)
	}
	if crc32.Checksum(b[:60], castagnoli) != binary.LittleEndian.Uint32(b[60:]) {
		return Header{}, fmt.Errorf("header: checksum mismatch: %w", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != version {
		return Header{}, fmt.Errorf("header: version %d: %w", v, ErrCorrupt)
	}
	if bs := binary.LittleEndian.Uint32(b[40:]); bs != BlockSize {
		return Header{}, fmt.Errorf("header: block size %d: %w", bs, ErrCorrupt)
	}
	h := Header{
		K:       int(binary.LittleEndian.Uint16(b[10:])),
		M:       int(binary.LittleEndian.Uint16(b[12:])),
		Index:   int(binary.LittleEndian.Uint16(b[14:])),
		Segment: binary.LittleEndian.Uint64(b[16:]),
		SegLen:  int64(binary.LittleEndian.Uint64(b[24:])),
		DataLen: int64(binary.LittleEndian.Uint64(b[32:])),
	}
	if h.K < 1 || h.Index >= h.K+h.M || h.DataLen != ShardLen(h.SegLen, h.K) {
		return Header{}, fmt.Errorf("header: inconsistent layout: %w", ErrCorrupt)
	}
	return h, nil
}

// BlockSum returns the checksum of data block blk of shard index of seg.
func BlockSum(seg uint64, index, blk int, data []byte) uint32 {
	var seed [14]byte
	binary.LittleEndian.PutUint64(seed[0:], seg)
	binary.LittleEndian.PutUint16(seed[8:], uint16(index))
	binary.LittleEndian.PutUint32(seed[10:], uint32(blk))
	return crc32.Update(crc32.Checksum(seed[:], castagnoli), castagnoli, data)
}

// BadBlocks checks data, the shard-local bytes starting at block first,
// against table (one checksum per block, starting at block first) and
// returns the numbers of the blocks that do not match.
func BadBlocks(seg uint64, index, first int, data []byte, table []byte) []int {
	var bad []int
	for i := 0; len(data) > 0; i++ {
		n := min(len(data), BlockSize)
		want := binary.LittleEndian.Uint32(table[4*i:])
		if BlockSum(seg, index, first+i, data[:n]) != want {
			bad = append(bad, first+i)
		}
		data = data[n:]
	}
	return bad
}

// finish writes the header, checksum table and footer of a shard file whose
// data region is already filled.
func finish(file []byte, h Header) {
	finishParts(file[:HeaderSize], file[HeaderSize:HeaderSize+h.DataLen], file[TableOffset(h.DataLen):], h)
}

// finishParts is finish for a file in three pieces: head (HeaderSize
// bytes), the filled data region, and tail (checksum table and footer).
func finishParts(head, data, tail []byte, h Header) {
	h.Marshal(head)
	table := tail[:4*Blocks(h.DataLen)]
	for blk := 0; blk*BlockSize < len(data); blk++ {
		end := min(len(data), (blk+1)*BlockSize)
		binary.LittleEndian.PutUint32(table[4*blk:], BlockSum(h.Segment, h.Index, blk, data[blk*BlockSize:end]))
	}
	finishTable(tail, h.DataLen)
}

// finishTable writes the footer of tail (checksum table and footer of a
// shard with dataLen data bytes) once the table is filled.
func finishTable(tail []byte, dataLen int64) {
	table := tail[:4*Blocks(dataLen)]
	foot := tail[len(tail)-FooterSize:]
	binary.LittleEndian.PutUint32(foot, crc32.Checksum(table, castagnoli))
	copy(foot[4:], footerMagic)
}

// Check is the result of verifying a whole shard file.
type Check struct {
	Header Header
	// Bad lists data blocks whose checksum fails. If the header, table or
	// footer is unusable, Err is set and Bad is nil.
	Bad []int
	Err error
	// HeaderDamaged means only the header is bad: Bad is still valid, as
	// checksums are seeded with the expected identity.
	HeaderDamaged bool
}

// Verify checks a complete shard file against what the segment record says
// it should be (segment id, index, segment length).
func Verify(file []byte, seg uint64, index int, segLen int64, k int) Check {
	want := Header{Segment: seg, Index: index, SegLen: segLen, DataLen: ShardLen(segLen, k)}
	if int64(len(file)) != FileSize(want.DataLen) {
		return Check{Err: fmt.Errorf("size %d, want %d: %w", len(file), FileSize(want.DataLen), ErrCorrupt)}
	}
	h, err := ParseHeader(file)
	if err != nil {
		// The header is only metadata; the data blocks may still be good,
		// and their checksums are seeded with the expected identity.
		h = want
		h.K = k
	} else if h.Segment != seg || h.Index != index || h.SegLen != segLen || h.K != k {
		return Check{Err: fmt.Errorf("header names segment %x shard %d, want segment %x shard %d: %w", h.Segment, h.Index, seg, index, ErrCorrupt)}
	}
	tOff := TableOffset(h.DataLen)
	table := file[tOff : tOff+4*int64(Blocks(h.DataLen))]
	foot := file[len(file)-FooterSize:]
	if !bytes.Equal(foot[4:], footerMagic) || crc32.Checksum(table, castagnoli) != binary.LittleEndian.Uint32(foot) {
		return Check{Header: h, Err: fmt.Errorf("checksum table damaged: %w", ErrCorrupt)}
	}
	bad := BadBlocks(seg, index, 0, file[HeaderSize:tOff], table)
	if err != nil {
		return Check{Header: h, Bad: bad, Err: err, HeaderDamaged: true}
	}
	return Check{Header: h, Bad: bad}
}
