package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Default sizes. A 512 KiB minimum keeps the index small (a few thousand
// entries per GiB) and lets the chunker skip hashing half of every chunk;
// 8 MiB bounds memory per stream.
const (
	DefaultMin = 512 << 10
	DefaultAvg = 1 << 20
	DefaultMax = 8 << 20
)

// ErrParams is returned (wrapped) by Next when Params are inconsistent.
var ErrParams = errors.New("invalid chunker parameters")

// Params sets chunk sizes in bytes. A zero field takes its default
// (DefaultMin, DefaultAvg, DefaultMax). Valid params have
// 64 <= Min <= Avg <= Max; Avg is rounded to a power of two for the
// mask width, while Min and Max are used exactly.
type Params struct {
	Min, Avg, Max int
}

// WithDefaults returns p with zero fields set to their defaults.
func (p Params) WithDefaults() Params {
	if p.Min == 0 {
		p.Min = DefaultMin
	}
	if p.Avg == 0 {
		p.Avg = DefaultAvg
	}
	if p.Max == 0 {
		p.Max = DefaultMax
	}
	return p
}

// Validate reports whether p (after WithDefaults) is usable.
func (p Params) Validate() error {
	p = p.WithDefaults()
	if p.Min < 64 || p.Min > p.Avg || p.Avg > p.Max || p.Max > 1<<30 {
		return fmt.Errorf("min %d, avg %d, max %d: want 64 <= min <= avg <= max <= 1 GiB: %w", p.Min, p.Avg, p.Max, ErrParams)
	}
	return nil
}

// Chunker cuts a stream into content-defined chunks. Create it with New.
type Chunker struct {
	r   io.Reader
	err error // sticky: invalid params or a read error; io.EOF once drained

	min, max, normal int
	maskS, maskL     uint64

	// buf is a window of the stream, not a whole chunk: chunks are built
	// in the caller's buffer as the window slides, so a Chunker holds
	// about 2*Avg bytes instead of 2*Max (16 MiB with the defaults, which
	// was a fifth of the server's memory with two files being chunked).
	// The cut rule only looks ahead to learn whether more than Min bytes
	// are left.
	buf        []byte
	start, end int  // unconsumed bytes are buf[start:end]
	eof        bool // r returned io.EOF
}

// New returns a Chunker reading from r with sizes p. Invalid p is reported
// by the first Next.
func New(r io.Reader, p Params) *Chunker {
	c := &Chunker{r: r}
	if err := p.Validate(); err != nil {
		c.err = fmt.Errorf("new chunker: %w", err)
		return c
	}
	p = p.WithDefaults()
	c.min, c.max, c.normal = p.Min, p.Max, p.Avg
	// Round log2(Avg) to the nearest integer; normalization level 2.
	b := bits.Len(uint(p.Avg)) - 1
	if b > 0 && p.Avg-(1<<b) > (1<<(b+1))-p.Avg {
		b++
	}
	c.maskS = topBits(b + 2)
	c.maskL = topBits(max(b-2, 1))
	// Twice Avg, so sliding the window moves about one chunk's data at
	// most; at least 1 MiB keeps reads large for small Avg.
	c.buf = make([]byte, max(2*c.normal, 1<<20))
	return c
}

func topBits(n int) uint64 {
	n = min(n, 63)
	return ^uint64(0) << (64 - n)
}

// Reset makes c read the next stream from r, keeping its parameters and
// buffer.
func (c *Chunker) Reset(r io.Reader) {
	if c.err != nil && !errors.Is(c.err, ErrParams) {
		c.err = nil
	}
	c.r, c.start, c.end, c.eof = r, 0, 0, false
}

// Next returns the next chunk, appended to buf[:0] (pass the previous
// result back in to reuse its memory). After the last chunk it returns
// io.EOF; a read error from the underlying reader is returned wrapped, and
// the chunks before it were complete.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	buf = buf[:0]
	if c.err != nil {
		return buf, c.err
	}
	if err := c.fill(c.min + 1); err != nil {
		c.err = err
		return buf, err
	}
	avail := c.end - c.start
	if avail == 0 {
		c.err = io.EOF
		return buf, io.EOF
	}
	// The rule, over the R bytes left: R <= Min is one chunk; otherwise
	// the small mask applies from Min up to Avg, the large one after it,
	// and a cut is forced at Max or where the stream ends.
	if c.eof && avail <= c.min {
		buf = append(buf, c.buf[c.start:c.end]...)
		c.start = c.end
		return buf, nil
	}
	normal := c.normal
	var h uint64
	n := 0 // bytes of this chunk so far
	for {
		if c.start == c.end {
			if err := c.fill(1); err != nil {
				c.err = err
				return buf[:0], err
			}
			if c.start == c.end {
				return buf, nil // the stream ends the chunk
			}
		}
		seg := c.buf[c.start:min(c.end, c.start+c.max-n)]
		j, cut := 0, false
		j, cut, h = c.scan(seg, n, normal, h)
		buf = append(buf, seg[:j]...)
		c.start += j
		n += j
		if cut || n == c.max {
			return buf, nil
		}
	}
}

// scan hashes seg, the bytes at offsets n.. of the current chunk, and
// returns how many of them belong to the chunk and whether it ends there.
// The hash only depends on the last 64 bytes, so it starts 64 bytes
// before Min: the first tested position depends on content alone.
func (c *Chunker) scan(seg []byte, n, normal int, h uint64) (int, bool, uint64) {
	j := max(0, min(len(seg), c.min-64-n)) // before the hash window
	for ; j < len(seg) && n+j < c.min; j++ {
		h = h<<1 + gear[seg[j]]
	}
	maskS, maskL := c.maskS, c.maskL
	for ; j < len(seg) && n+j < normal; j++ {
		h = h<<1 + gear[seg[j]]
		if h&maskS == 0 {
			return j + 1, true, h
		}
	}
	for ; j < len(seg); j++ {
		h = h<<1 + gear[seg[j]]
		if h&maskL == 0 {
			return j + 1, true, h
		}
	}
	return len(seg), false, h
}

// fill makes sure at least want bytes are buffered, or everything left.
func (c *Chunker) fill(want int) error {
	if c.eof || c.end-c.start >= want {
		return nil
	}
	if c.start > 0 && len(c.buf)-c.start < want {
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	for empty := 0; c.end-c.start < want; {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		if err == io.EOF {
			c.eof = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("read chunker input: %w", err)
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty >= 100 {
			return fmt.Errorf("read chunker input: %w", io.ErrNoProgress)
		}
	}
	return nil
}
