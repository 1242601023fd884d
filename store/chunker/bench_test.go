package chunker

import (
	"bytes"
	"io"
	"testing"
)

func BenchmarkChunkerDefaults(b *testing.B) {
	data := randomData(1, 64<<20)
	c := New(nil, Params{})
	var buf []byte
	var n int
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.Reset(bytes.NewReader(data))
		for {
			var err error
			if buf, err = c.Next(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(int64(b.N)*int64(len(data))/int64(n)), "B/chunk")
}

// BenchmarkCut measures the hash loop alone over whole chunks (no copy).
func BenchmarkCut(b *testing.B) {
	data := randomData(1, 64<<20)
	c := New(nil, Params{})
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			n, _, _ := c.scan(rest[:min(len(rest), c.max)], 0, c.normal, 0)
			rest = rest[n:]
		}
	}
}
