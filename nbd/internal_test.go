package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
)

func x(off, n int64, hole bool) layers.Extent { return layers.Extent{Off: off, Len: n, Hole: hole} }

func TestDescriptors(t *testing.T) {
	const H, D = stateHole | stateZero, uint32(0)
	for _, tc := range []struct {
		name        string
		exts        []layers.Extent
		off, length int64
		want        []uint32
	}{
		{"no extents: all data", nil, 0, 100, []uint32{100, D}},
		{"exact", []layers.Extent{x(0, 10, true), x(10, 20, false)}, 0, 30, []uint32{10, H, 20, D}},
		{"clipped both ends", []layers.Extent{x(0, 10, true), x(10, 20, false), x(30, 10, true)}, 5, 30,
			[]uint32{5, H, 20, D, 5, H}},
		{"merged neighbours", []layers.Extent{x(0, 10, true), x(10, 10, true), x(20, 5, false), x(25, 5, false)}, 0, 30,
			[]uint32{20, H, 10, D}},
		{"gaps are data", []layers.Extent{x(10, 10, true), x(30, 10, true)}, 0, 40, []uint32{10, D, 10, H, 10, D, 10, H}},
		{"unsorted", []layers.Extent{x(10, 10, false), x(0, 10, true)}, 0, 20, []uint32{10, H, 10, D}},
		{"short extents: tail is data", []layers.Extent{x(0, 10, true)}, 0, 40, []uint32{10, H, 30, D}},
		{"overlapping", []layers.Extent{x(0, 20, true), x(10, 20, false)}, 0, 30, []uint32{20, H, 10, D}},
		{"outside the range", []layers.Extent{x(100, 10, true)}, 0, 50, []uint32{50, D}},
	} {
		got := descriptors(tc.exts, tc.off, tc.length)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: descriptors(%v, %d, %d) = %v, want %v", tc.name, tc.exts, tc.off, tc.length, got, tc.want)
		}
	}
}

func TestReadChunks(t *testing.T) {
	const g = holeGranule
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i%251 + 1)
		}
		return b
	}
	type chunk struct {
		typ      uint16
		off, len uint64
		done     bool
	}
	parse := func(parts [][]byte) []chunk {
		var out []chunk
		for i := 0; i < len(parts); i++ {
			p := parts[i]
			c := chunk{typ: binary.BigEndian.Uint16(p[6:]), off: binary.BigEndian.Uint64(p[20:]),
				done: binary.BigEndian.Uint16(p[4:])&replyFlagDone != 0}
			if c.typ == replyOffsetHole {
				c.len = uint64(binary.BigEndian.Uint32(p[28:]))
			} else {
				c.len = uint64(binary.BigEndian.Uint32(p[16:])) - 8
				if uint64(len(parts[i+1])) != c.len {
					t.Fatalf("data chunk header says %d bytes, %d follow", c.len, len(parts[i+1]))
				}
				i++
			}
			out = append(out, c)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		off  uint64
		buf  []byte
		want []chunk
	}{
		{"all data", 0, data(3 * g), []chunk{{replyOffsetData, 0, 3 * g, true}}},
		{"all zero", g, make([]byte, 2*g), []chunk{{replyOffsetHole, g, 2 * g, true}}},
		{"hole in the middle", 0, slices.Concat(data(g), make([]byte, g), data(g)),
			[]chunk{{replyOffsetData, 0, g, false}, {replyOffsetHole, g, g, false}, {replyOffsetData, 2 * g, g, true}}},
		{"unaligned start", 100, slices.Concat(make([]byte, g-100), data(g)),
			[]chunk{{replyOffsetHole, 100, g - 100, false}, {replyOffsetData, g, g, true}}},
		{"zeros inside a data granule stay data", 0, slices.Concat(data(10), make([]byte, g-10)),
			[]chunk{{replyOffsetData, 0, g, true}}},
	} {
		got := parse(readChunks(42, tc.off, tc.buf))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: chunks %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		err      error
		code     uint32
		expected bool
	}{
		{fmt.Errorf("write block 3: %w", layers.ErrReadOnly), errPerm, true},
		{fmt.Errorf("x: %w", layers.ErrInvalid), errInval, true},
		{fmt.Errorf("x: %w", layers.ErrNoSpace), errNoSpc, true},
		{fmt.Errorf("x: %w", syscall.ENOSPC), errNoSpc, true},
		{fmt.Errorf("x: %w", syscall.EDQUOT), errNoSpc, true},
		{errors.New("shard 3: checksum mismatch"), errIO, false},
		{syscall.EIO, errIO, false},
	} {
		code, expected := errno(tc.err)
		if code != tc.code || expected != tc.expected {
			t.Errorf("errno(%v) = %d, %v; want %d, %v", tc.err, code, expected, tc.code, tc.expected)
		}
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	r := rateLimit{now: func() time.Time { return now }, window: time.Minute, burst: 3}
	var allowed []bool
	for range 5 {
		ok, _ := r.allow()
		allowed = append(allowed, ok)
	}
	if !slices.Equal(allowed, []bool{true, true, true, false, false}) {
		t.Errorf("first window: %v", allowed)
	}
	now = now.Add(time.Minute)
	if ok, dropped := r.allow(); !ok || dropped != 2 {
		t.Errorf("next window: allowed %v, dropped %d; want true, 2", ok, dropped)
	}
}

func TestBufPool(t *testing.T) {
	p := newBufPool(32 << 20)
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, 32 << 20} {
		b := p.get(n)
		if len(b) != n || cap(b) < n {
			t.Errorf("get(%d): len %d cap %d", n, len(b), cap(b))
		}
		p.put(b)
	}
	if b := p.get(32<<20 + 1); len(b) != 32<<20+1 {
		t.Errorf("oversized get: len %d", len(b))
	}
}

func TestPreferredBlockSize(t *testing.T) {
	c := &conn{s: &Server{opts: Options{}.withDefaults()}}
	for _, tc := range []struct {
		bs   int
		want uint32
	}{{0, 4096}, {512, 4096}, {65536, 65536}, {100000, 131072}, {1 << 30, 32 << 20}} {
		if got := c.preferredBlockSize(sized(tc.bs)); got != tc.want {
			t.Errorf("block size %d: preferred %d, want %d", tc.bs, got, tc.want)
		}
	}
}

type sized int

func (s sized) BlockSize() int                                          { return int(s) }
func (sized) Size() int64                                               { return 1 << 40 }
func (sized) ReadOnly() bool                                            { return true }
func (sized) ReadAt(_ context.Context, p []byte, _ int64) (int, error)  { return len(p), nil }
func (sized) WriteAt(_ context.Context, p []byte, _ int64) (int, error) { return 0, layers.ErrReadOnly }
