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

	buf        []byte // window of the stream, len(buf) = max + readahead
	start, end int    // unconsumed bytes are buf[start:end]
	eof        bool   // r returned io.EOF
}

// New returns a Chunker reading from r with sizes p. Invalid p is reported
// by the first call to Next.
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
	// Reading a full Max beyond the window start each time would copy a
	// lot for small Max; at least 1 MiB of readahead keeps reads large.
	c.buf = make([]byte, c.max+max(c.max, 1<<20))
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
	if c.err != nil {
		return buf[:0], c.err
	}
	if err := c.fill(); err != nil {
		c.err = err
		return buf[:0], err
	}
	if c.start == c.end {
		c.err = io.EOF
		return buf[:0], io.EOF
	}
	data := c.buf[c.start:c.end]
	n := c.cut(data)
	buf = append(buf[:0], data[:n]...)
	c.start += n
	return buf, nil
}

// fill makes sure at least max bytes are buffered, or everything left.
func (c *Chunker) fill() error {
	if c.eof || c.end-c.start >= c.max {
		return nil
	}
	if c.start > 0 {
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	for empty := 0; c.end < c.max; {
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

// cut returns the length of the first chunk of data, given that data holds
// at least max bytes or the rest of the stream.
func (c *Chunker) cut(data []byte) int {
	n := len(data)
	if n <= c.min {
		return n
	}
	if n > c.max {
		n = c.max
	}
	normal := min(c.normal, n)
	// The hash only depends on the last 64 bytes; starting 64 bytes early
	// makes the first tested position depend on content alone.
	i := c.min - 64
	var h uint64
	for _, b := range data[i:c.min] {
		h = h<<1 + gear[b]
	}
	i = c.min
	maskS, maskL := c.maskS, c.maskL
	for _, b := range data[i:normal] {
		h = h<<1 + gear[b]
		if h&maskS == 0 {
			return i + 1
		}
		i++
	}
	for _, b := range data[i:n] {
		h = h<<1 + gear[b]
		if h&maskL == 0 {
			return i + 1
		}
		i++
	}
	return n
}
