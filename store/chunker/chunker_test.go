package chunker

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"slices"
	"testing"
	"testing/iotest"
)

func randomData(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func chunks(t testing.TB, r io.Reader, p Params) [][]byte {
	t.Helper()
	c := New(r, p)
	var out [][]byte
	var buf []byte
	for {
		var err error
		buf, err = c.Next(buf)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next after %d chunks: %v", len(out), err)
		}
		out = append(out, bytes.Clone(buf))
	}
}

func hashes(cs [][]byte) map[[32]byte]bool {
	m := map[[32]byte]bool{}
	for _, c := range cs {
		m[sha256.Sum256(c)] = true
	}
	return m
}

// small keeps tests fast: the same algorithm at 1/64 of the default sizes.
var small = Params{Min: 8 << 10, Avg: 16 << 10, Max: 128 << 10}

func TestReassemblyAndBounds(t *testing.T) {
	cases := []struct {
		name string
		n    int
		p    Params
	}{
		{"empty", 0, small},
		{"one byte", 1, small},
		{"below min", small.Min - 1, small},
		{"exactly min", small.Min, small},
		{"min plus one", small.Min + 1, small},
		{"many small", 3 << 20, small},
		{"defaults below min", 300 << 10, Params{}},
		{"defaults", 24 << 20, Params{}},
		{"tiny avg", 1 << 20, Params{Min: 64, Avg: 256, Max: 1024}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := randomData(int64(c.n), c.n)
			p := c.p.WithDefaults()
			cs := chunks(t, bytes.NewReader(data), c.p)
			if got := bytes.Join(cs, nil); !bytes.Equal(got, data) {
				t.Fatalf("reassembled %d bytes, want %d identical", len(got), len(data))
			}
			if c.n == 0 && len(cs) != 0 {
				t.Fatalf("empty input gave %d chunks", len(cs))
			}
			if c.n > 0 && c.n <= p.Min && len(cs) != 1 {
				t.Fatalf("input of %d <= min %d gave %d chunks, want 1", c.n, p.Min, len(cs))
			}
			for i, ch := range cs {
				last := i == len(cs)-1
				if len(ch) > p.Max || len(ch) == 0 || (!last && len(ch) < p.Min) {
					t.Fatalf("chunk %d of %d has %d bytes, outside [%d, %d]", i, len(cs), len(ch), p.Min, p.Max)
				}
			}
			if c.n > 4*p.Max && len(cs) > 0 {
				mean := c.n / len(cs)
				t.Logf("%d chunks, mean %d bytes (avg param %d)", len(cs), mean, p.Avg)
				if mean < p.Min || mean > 3*p.Avg {
					t.Errorf("mean chunk size %d far from avg %d", mean, p.Avg)
				}
			}
		})
	}
}

func TestDeterministicAcrossReadSizes(t *testing.T) {
	data := randomData(7, 2<<20)
	want := chunks(t, bytes.NewReader(data), small)
	readers := map[string]io.Reader{
		"one byte":  iotest.OneByteReader(bytes.NewReader(data)),
		"half":      iotest.HalfReader(bytes.NewReader(data)),
		"data+eof":  iotest.DataErrReader(bytes.NewReader(data)),
		"second go": bytes.NewReader(data),
	}
	for name, r := range readers {
		got := chunks(t, r, small)
		if len(got) != len(want) {
			t.Fatalf("%s: %d chunks, want %d", name, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%s: chunk %d differs", name, i)
			}
		}
	}
}

// TestGoldenBoundaries pins the chunk sizes of a fixed input: a change to
// the gear table or the cut rule changes every chunk id in existing
// repositories and must be deliberate.
func TestGoldenBoundaries(t *testing.T) {
	cs := chunks(t, bytes.NewReader(randomData(42, 200<<10)), small)
	var sizes []int
	for _, c := range cs {
		sizes = append(sizes, len(c))
	}
	want := goldenSizes
	if len(sizes) != len(want) {
		t.Fatalf("sizes %v, want %v", sizes, want)
	}
	for i := range sizes {
		if sizes[i] != want[i] {
			t.Fatalf("sizes %v, want %v", sizes, want)
		}
	}
	if gear[0] != goldenGear0 || gear[255] != goldenGear255 {
		t.Fatalf("gear table changed: %#x %#x", gear[0], gear[255])
	}
}

func TestShiftResilience(t *testing.T) {
	base := randomData(9, 6<<20)
	orig := hashes(chunks(t, bytes.NewReader(base), small))
	edits := map[string][]byte{
		"insert 1 at front":    append([]byte{0xAB}, base...),
		"insert 1000 at front": append(randomData(10, 1000), base...),
		"delete 17 at front":   base[17:],
		"insert in middle":     append(append(bytes.Clone(base[:3<<20]), "hello"...), base[3<<20:]...),
	}
	for name, data := range edits {
		got := chunks(t, bytes.NewReader(data), small)
		same := 0
		for h := range hashes(got) {
			if orig[h] {
				same++
			}
		}
		// A local edit changes the chunk it falls in and, rarely, one
		// more; allow a few for the normalized-chunking tail.
		if changed := len(got) - same; changed > 4 {
			t.Errorf("%s: %d of %d chunks changed, want at most 4", name, changed, len(got))
		}
	}
}

func TestDefaultsShiftResilience(t *testing.T) {
	base := randomData(11, 20<<20)
	orig := hashes(chunks(t, bytes.NewReader(base), Params{}))
	got := chunks(t, bytes.NewReader(append([]byte("x"), base...)), Params{})
	same := 0
	for h := range hashes(got) {
		if orig[h] {
			same++
		}
	}
	if len(got)-same > 2 {
		t.Errorf("defaults: %d of %d chunks changed after a 1-byte insert", len(got)-same, len(got))
	}
}

func TestInvalidParams(t *testing.T) {
	for _, p := range []Params{{Min: 10}, {Min: 2 << 20, Avg: 1 << 20}, {Avg: 16 << 20}, {Max: 1 << 10}} {
		_, err := New(bytes.NewReader([]byte("x")), p).Next(nil)
		if !errors.Is(err, ErrParams) {
			t.Errorf("%+v: err = %v, want ErrParams", p, err)
		}
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(randomData(1, 100<<10)), iotest.ErrReader(boom))
	c := New(r, small)
	var err error
	for range 100 {
		if _, err = c.Next(nil); err != nil {
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
	if _, err2 := c.Next(nil); !errors.Is(err2, boom) {
		t.Fatalf("error not sticky: %v", err2)
	}
}

func TestReset(t *testing.T) {
	a, b := randomData(1, 500<<10), randomData(2, 300<<10)
	c := New(bytes.NewReader(a), small)
	for {
		if _, err := c.Next(nil); err != nil {
			break
		}
	}
	c.Reset(bytes.NewReader(b))
	var got []byte
	for {
		ch, err := c.Next(nil)
		if err != nil {
			break
		}
		got = append(got, ch...)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("after Reset the chunker did not reproduce the second stream")
	}
}

// referenceChunks cuts data with the chunking rule stated over the whole
// stream, as the first implementation did with a 2*Max window: the
// streaming Chunker must give exactly these chunks (they are the chunk
// ids of existing repositories).
func referenceChunks(data []byte, p Params) []int {
	p = p.WithDefaults()
	c := New(nil, p)
	var sizes []int
	for len(data) > 0 {
		n := len(data)
		if n > c.min {
			n = min(n, c.max)
			normal := min(c.normal, n)
			var h uint64
			for _, b := range data[c.min-64 : c.min] {
				h = h<<1 + gear[b]
			}
			cut := n
			for i := c.min; i < n; i++ {
				h = h<<1 + gear[data[i]]
				mask := c.maskL
				if i < normal {
					mask = c.maskS
				}
				if h&mask == 0 {
					cut = i + 1
					break
				}
			}
			n = cut
		}
		sizes = append(sizes, n)
		data = data[n:]
	}
	return sizes
}

func TestMatchesReference(t *testing.T) {
	zeros := func(n int) []byte { return make([]byte, n) }
	mixed := func(seed int64, n int) []byte {
		d := randomData(seed, n)
		for i := n / 3; i < n/2; i++ {
			d[i] = 0 // a long run forces cuts at Max
		}
		return d
	}
	tests := []struct {
		name string
		p    Params
		data []byte
	}{
		{"small params, random", small, randomData(3, 3<<20)},
		{"small params, zeros", small, zeros(1 << 20)},
		{"small params, mixed", small, mixed(4, 2<<20)},
		{"small params, just over min", small, randomData(5, small.Min+1)},
		{"small params, exactly min", small, randomData(12, small.Min)},
		{"small params, two chunks and min", small, randomData(13, 2*small.Max+small.Min)},
		{"small params, just under avg", small, randomData(6, small.Avg-1)},
		{"defaults, random 40 MiB", Params{}, randomData(7, 40<<20)},
		{"defaults, mixed 30 MiB", Params{}, mixed(8, 30<<20)},
		{"defaults, 1.5 MiB", Params{}, randomData(9, 3<<19)},
		{"defaults, min+100", Params{}, randomData(10, DefaultMin+100)},
		{"tight params", Params{Min: 64, Avg: 128, Max: 256}, randomData(11, 1<<20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := referenceChunks(tc.data, tc.p)
			for rname, r := range map[string]io.Reader{
				"whole": bytes.NewReader(tc.data),
				"half":  iotest.HalfReader(bytes.NewReader(tc.data)),
				"eof":   iotest.DataErrReader(bytes.NewReader(tc.data)),
			} {
				var got []int
				for _, ch := range chunks(t, r, tc.p) {
					got = append(got, len(ch))
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s reader: %d chunks %v..., reference %d chunks %v...", rname, len(got), got[:min(len(got), 8)], len(want), want[:min(len(want), 8)])
				}
			}
		})
	}
}
