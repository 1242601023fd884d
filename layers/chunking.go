package layers

import (
	"io"
	"sync"

	"github.com/strata-backup/strata/store/chunker"
)

// splitter cuts file data into content-defined chunks. Chunkers hold a
// window of twice the maximum chunk size, so they are pooled; regions no
// longer than the minimum chunk size are one chunk and skip them.
type splitter struct {
	params chunker.Params
	pool   sync.Pool // of *chunker.Chunker
	bufs   sync.Pool // of *[]byte, chunk buffers
}

func newSplitter(p chunker.Params) *splitter {
	return &splitter{params: p.WithDefaults()}
}

// split cuts the n bytes read from r (which start at file offset base)
// into chunks and calls put for each. The chunk slice is reused after put
// returns.
func (s *splitter) split(r io.Reader, base, n int64, put func(data []byte, off int64) error) error {
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer s.bufs.Put(bp)
	if n <= int64(s.params.Min) {
		if int64(cap(*bp)) < n {
			*bp = make([]byte, n)
		}
		buf := (*bp)[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		return put(buf, base)
	}
	c, _ := s.pool.Get().(*chunker.Chunker)
	if c == nil {
		c = chunker.New(r, s.params)
	} else {
		c.Reset(r)
	}
	defer s.pool.Put(c)
	off := base
	for {
		data, err := c.Next(*bp)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		*bp = data
		if err := put(data, off); err != nil {
			return err
		}
		off += int64(len(data))
	}
}
