package nbd

import (
	"bytes"
	"math/bits"
	"sync"
)

// bufPool hands out payload buffers in power-of-two size classes from 4 KiB
// to the maximum request size, so a busy connection does not allocate (and
// zero) a fresh buffer per request.
type bufPool struct {
	classes []sync.Pool // class i holds *[]byte of capacity minBufShift<<i
}

const minBufShift = 12 // 4 KiB

func newBufPool(maxSize int) *bufPool {
	n := 1
	for (1<<minBufShift)<<(n-1) < maxSize {
		n++
	}
	return &bufPool{classes: make([]sync.Pool, n)}
}

func classOf(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// get returns a buffer of length n. Its contents are unspecified.
func (p *bufPool) get(n int) []byte {
	c := classOf(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, (1<<minBufShift)<<c)
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b []byte) {
	c := classOf(cap(b))
	if c >= len(p.classes) || cap(b) != (1<<minBufShift)<<c {
		return
	}
	b = b[:cap(b)]
	p.classes[c].Put(&b)
}

// zeroPage is compared against to find all-zero runs; never written.
var zeroPage [64 << 10]byte

// isZero reports whether b is all zeros. bytes.Equal is vectorised, and for
// data it stops at the first non-zero byte.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
