// Package erasure turns a segment into K data + M parity shard files with
// klauspost/reedsolomon and puts them back together, and owns the shard
// file format.
//
// The code is systematic: data shard i holds segment bytes
// [i*L, (i+1)*L) verbatim (L = ceil(S/K), the last one zero-padded), so a
// healthy read of a byte range is a plain read from one or two data shards
// at a known offset, with no decoding.
//
// A shard file is
//
//	header (HeaderSize bytes: magic, version, K, M, shard index, segment
//	        id, segment length S, shard data length L, block size, CRC)
//	data   (L bytes)
//	table  (one CRC-32C per BlockSize block of data)
//	footer (CRC-32C of the table, magic)
//
// Reed–Solomon detects nothing by itself; the per-block checksums say which
// block of which shard is bad, so reconstruction uses only good blocks and
// a bad region is located, not just noticed. Each block's checksum is
// seeded with the segment id, shard index and block number, so a block or
// file in the wrong place fails its check too.
//
// EncodeEach produces the shard files one at a time, as parts (header,
// data, table and footer), from a segment it reads one data region at a
// time, so neither it nor its caller holds the whole segment.
//
// Coder is safe for concurrent use.
package erasure
