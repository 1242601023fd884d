// Package chunker splits a byte stream into content-defined chunks, so an
// insertion or deletion near the start of a file moves only the chunk
// boundaries next to it and every later chunk keeps its id (dedup across
// revisions).
//
// # Algorithm
//
// FastCDC (Xia et al., USENIX ATC 2016) with normalized chunking: a gear
// rolling hash h = h<<1 + gear[byte] is tested against a mask at every byte
// after the minimum size. Up to the normal size (Avg) the mask has two bits
// more than log2(Avg), after it two bits fewer, which pulls chunk sizes
// towards Avg. A cut is forced at Max. The gear table comes from a fixed
// seed, so the same bytes always give the same chunks on every machine and
// release: the table is part of the repository format.
//
// The test uses the top bits of h: after the shift, bit i of h depends on
// the last i+1 bytes, so the top bits cover a window of at least 40 bytes.
//
// # Invariants
//
// Every chunk but the last is between Min and Max bytes; the last one is
// between 1 and Max bytes (shorter than Min only when the stream ends). An
// input shorter than Min is one chunk. An empty input has no chunks.
// Concatenating the chunks gives back the input exactly.
//
// # Concurrency and errors
//
// A Chunker is not safe for concurrent use. Next returns io.EOF after the
// last chunk, read errors from the underlying reader wrapped, and
// ErrParams (wrapped) for invalid Params.
package chunker
