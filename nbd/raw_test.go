package nbd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

// Wire values, spelled out independently of the package under test.
const (
	optExportName    = 1
	optAbort         = 2
	optList          = 3
	optStartTLS      = 5
	optInfo          = 6
	optGo            = 7
	optStructured    = 8
	optListMeta      = 9
	optSetMeta       = 10
	optExtHeaders    = 11
	repAck           = 1
	repServer        = 2
	repInfo          = 3
	repMetaContext   = 4
	repErrUnsup      = 1<<31 | 1
	repErrInvalid    = 1<<31 | 3
	repErrUnknown    = 1<<31 | 6
	cmdRead          = 0
	cmdWrite         = 1
	cmdDisc          = 2
	cmdFlush         = 3
	cmdTrim          = 4
	cmdCache         = 5
	cmdWriteZeroes   = 6
	cmdBlockStatus   = 7
	flagFUA          = 1
	flagNoHole       = 2
	flagDF           = 4
	flagReqOne       = 8
	chunkNone        = 0
	chunkData        = 1
	chunkHole        = 2
	chunkBlockStatus = 5
	chunkError       = 1<<15 | 1
	eperm            = 1
	eio              = 5
	einval           = 22
	enospc           = 28
)

// rawClient speaks NBD by hand to reach the corners real clients avoid.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, ts *testServer) *rawClient {
	t.Helper()
	c, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, r: newReader(c)}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func (rc *rawClient) write(parts ...any) {
	rc.t.Helper()
	var b bytes.Buffer
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b.WriteString(v)
		case []byte:
			b.Write(v)
		default:
			binary.Write(&b, binary.BigEndian, v)
		}
	}
	if _, err := rc.c.Write(b.Bytes()); err != nil {
		rc.t.Fatalf("write to server: %v", err)
	}
}

func (rc *rawClient) read(v any) {
	rc.t.Helper()
	if err := binary.Read(rc.r, binary.BigEndian, v); err != nil {
		rc.t.Fatalf("read from server: %v", err)
	}
}

func (rc *rawClient) bytes(n int) []byte {
	rc.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc.r, b); err != nil {
		rc.t.Fatalf("read %d bytes from server: %v", n, err)
	}
	return b
}

// hello reads the greeting and sends client flags.
func (rc *rawClient) hello(clientFlags uint32) {
	rc.t.Helper()
	var g struct {
		Magic, Opt uint64
		Flags      uint16
	}
	rc.read(&g)
	if g.Magic != 0x4e42444d41474943 || g.Opt != 0x49484156454F5054 || g.Flags != 3 {
		rc.t.Fatalf("greeting %#x %#x flags %#x, want NBDMAGIC IHAVEOPT 3", g.Magic, g.Opt, g.Flags)
	}
	rc.write(clientFlags)
}

func (rc *rawClient) option(opt uint32, data []byte) {
	rc.t.Helper()
	rc.write(uint64(0x49484156454F5054), opt, uint32(len(data)), data)
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (rc *rawClient) reply() optReply {
	rc.t.Helper()
	var h struct {
		Magic          uint64
		Opt, Typ, Size uint32
	}
	rc.read(&h)
	if h.Magic != 0x3e889045565a9 {
		rc.t.Fatalf("option reply magic %#x", h.Magic)
	}
	return optReply{h.Opt, h.Typ, rc.bytes(int(h.Size))}
}

// replies reads option replies up to and including the final one (an ACK
// or an error).
func (rc *rawClient) replies(opt uint32) []optReply {
	rc.t.Helper()
	var out []optReply
	for {
		r := rc.reply()
		if r.opt != opt {
			rc.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		out = append(out, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return out
		}
	}
}

func infoRequest(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaRequest(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// expectClosed checks that the server hangs up.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(rc.r); err != nil {
		rc.t.Fatalf("server did not close the connection: %v", err)
	}
}

// connect negotiates up to transmission with NBD_OPT_GO.
func (rc *rawClient) connect(name string, structured, meta bool) (size uint64, flags uint16) {
	rc.t.Helper()
	rc.hello(3)
	if structured {
		rc.option(optStructured, nil)
		if r := rc.replies(optStructured); r[0].typ != repAck {
			rc.t.Fatalf("structured reply: %#x", r[0].typ)
		}
	}
	if meta {
		rc.option(optSetMeta, metaRequest(name, "base:allocation"))
		if r := rc.replies(optSetMeta); len(r) != 2 || r[0].typ != repMetaContext {
			rc.t.Fatalf("set meta context: %+v", r)
		}
	}
	rc.option(optGo, infoRequest(name, 3))
	for _, r := range rc.replies(optGo) {
		switch {
		case r.typ == repInfo && binary.BigEndian.Uint16(r.data) == 0:
			size = binary.BigEndian.Uint64(r.data[2:])
			flags = binary.BigEndian.Uint16(r.data[10:])
		case r.typ != repInfo && r.typ != repAck:
			rc.t.Fatalf("go %q: reply %#x %q", name, r.typ, r.data)
		}
	}
	return size, flags
}

func (rc *rawClient) request(flags, typ uint16, handle, off uint64, length uint32, payload []byte) {
	rc.t.Helper()
	rc.write(uint32(0x25609513), flags, typ, handle, off, length, payload)
}

// simple reads a simple reply header.
func (rc *rawClient) simple() (errno uint32, handle uint64) {
	rc.t.Helper()
	var h struct {
		Magic, Err uint32
		Handle     uint64
	}
	rc.read(&h)
	if h.Magic != 0x67446698 {
		rc.t.Fatalf("simple reply magic %#x", h.Magic)
	}
	return h.Err, h.Handle
}

type chunk struct {
	flags, typ uint16
	handle     uint64
	data       []byte
}

func (rc *rawClient) chunk() chunk {
	rc.t.Helper()
	var h struct {
		Magic      uint32
		Flags, Typ uint16
		Handle     uint64
		Size       uint32
	}
	rc.read(&h)
	if h.Magic != 0x668e33ef {
		rc.t.Fatalf("structured reply magic %#x", h.Magic)
	}
	return chunk{h.Flags, h.Typ, h.Handle, rc.bytes(int(h.Size))}
}

// structured reads chunks until DONE and returns them.
func (rc *rawClient) structured() []chunk {
	rc.t.Helper()
	var out []chunk
	for {
		c := rc.chunk()
		out = append(out, c)
		if c.flags&1 != 0 {
			return out
		}
	}
}

// anyReply reads a reply without payload, simple or structured, and
// returns its handle and errno.
func (rc *rawClient) anyReply() (handle uint64, errno uint32) {
	rc.t.Helper()
	magic, err := rc.r.Peek(4)
	if err != nil {
		rc.t.Fatalf("read reply: %v", err)
	}
	if binary.BigEndian.Uint32(magic) == 0x67446698 {
		errno, handle = rc.simple()
		return handle, errno
	}
	chunks := rc.structured()
	for _, c := range chunks {
		if c.typ&(1<<15) != 0 {
			errno = binary.BigEndian.Uint32(c.data)
		}
	}
	return chunks[0].handle, errno
}

// assemble rebuilds read data from content chunks; errno is from an error
// chunk, if any.
func assemble(t testing.TB, chunks []chunk, off uint64, length int) (data []byte, errno uint32, holes int) {
	t.Helper()
	data = make([]byte, length)
	covered := 0
	for _, c := range chunks {
		switch c.typ {
		case chunkData:
			o := binary.BigEndian.Uint64(c.data) - off
			covered += copy(data[o:], c.data[8:])
		case chunkHole:
			o := binary.BigEndian.Uint64(c.data) - off
			n := binary.BigEndian.Uint32(c.data[8:])
			clear(data[o : o+uint64(n)])
			covered += int(n)
			holes++
		case chunkError:
			errno = binary.BigEndian.Uint32(c.data)
		case chunkNone:
		default:
			t.Fatalf("unexpected chunk type %d in read reply", c.typ)
		}
	}
	if errno == 0 && covered != length {
		t.Fatalf("read reply covers %d bytes, want %d", covered, length)
	}
	return data, errno, holes
}

func TestHandshake(t *testing.T) {
	img, _ := mixedImage(5, 1<<20, 64<<10)
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	rw := nbdtest.NewMem(2<<20, nbdtest.MemOptions{BlockSize: 256 << 10})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"ro": ro, "": rw}), nbd.Options{})

	t.Run("unknown client flags", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(1 << 5)
		rc.expectClosed()
	})
	t.Run("bad option magic", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(3)
		rc.write(uint64(0x1122334455667788), uint32(optList), uint32(0))
		rc.expectClosed()
	})
	t.Run("oversized option", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(3)
		rc.write(uint64(0x49484156454F5054), uint32(optList), uint32(1<<30))
		rc.expectClosed()
	})
	t.Run("options", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(3)
		for _, tc := range []struct {
			name  string
			opt   uint32
			data  []byte
			types []uint32 // reply types in order
		}{
			{"unknown option", 99, []byte("junk"), []uint32{repErrUnsup}},
			{"starttls", optStartTLS, nil, []uint32{repErrUnsup}},
			{"extended headers", optExtHeaders, nil, []uint32{repErrUnsup}},
			{"list with data", optList, []byte("x"), []uint32{repErrInvalid}},
			{"list", optList, nil, []uint32{repServer, repServer, repAck}},
			{"meta before structured", optListMeta, metaRequest("ro"), []uint32{repErrInvalid}},
			{"info unknown export", optInfo, infoRequest("nope"), []uint32{repErrUnknown}},
			{"info truncated", optInfo, []byte{0, 0, 0, 9, 'r'}, []uint32{repErrInvalid}},
			{"info bad count", optInfo, append(infoRequest("ro"), 0), []uint32{repErrInvalid}},
			{"info", optInfo, infoRequest("ro", 1, 3), []uint32{repInfo, repInfo, repInfo, repAck}},
			{"structured with data", optStructured, []byte{1}, []uint32{repErrInvalid}},
			{"structured", optStructured, nil, []uint32{repAck}},
			{"list meta all", optListMeta, metaRequest("ro"), []uint32{repMetaContext, repAck}},
			{"list meta base:", optListMeta, metaRequest("ro", "base:"), []uint32{repMetaContext, repAck}},
			{"list meta other", optListMeta, metaRequest("ro", "qemu:dirty-bitmap:x"), []uint32{repAck}},
			{"set meta base: selects nothing", optSetMeta, metaRequest("ro", "base:"), []uint32{repAck}},
			{"set meta malformed", optSetMeta, metaRequest("ro", "base:allocation")[:12], []uint32{repErrInvalid}},
			{"set meta", optSetMeta, metaRequest("ro", "x-foo:bar", "base:allocation"), []uint32{repMetaContext, repAck}},
		} {
			rc.option(tc.opt, tc.data)
			var got []uint32
			replies := rc.replies(tc.opt)
			for _, r := range replies {
				got = append(got, r.typ)
			}
			if !slices.Equal(got, tc.types) {
				t.Errorf("%s: reply types %#x, want %#x", tc.name, got, tc.types)
				continue
			}
			switch tc.name {
			case "list":
				var names []string
				for _, r := range replies[:2] {
					n := binary.BigEndian.Uint32(r.data)
					names = append(names, string(r.data[4:4+n]))
				}
				if !slices.Equal(names, []string{"", "ro"}) {
					t.Errorf("list: %q", names)
				}
			case "info":
				export, bs, name := replies[0].data, replies[1].data, replies[2].data
				if binary.BigEndian.Uint16(export) != 0 || binary.BigEndian.Uint64(export[2:]) != 1<<20 {
					t.Errorf("info export %x", export)
				}
				flags := binary.BigEndian.Uint16(export[10:])
				// HAS_FLAGS, READ_ONLY, FLUSH, FUA, MULTI_CONN; no DF before structured replies.
				if want := uint16(1 | 2 | 4 | 8 | 256); flags != want {
					t.Errorf("info flags %#x, want %#x", flags, want)
				}
				if binary.BigEndian.Uint16(bs) != 3 || binary.BigEndian.Uint32(bs[2:]) != 1 ||
					binary.BigEndian.Uint32(bs[6:]) != 64<<10 || binary.BigEndian.Uint32(bs[10:]) != 32<<20 {
					t.Errorf("block size info %x, want min 1 preferred 64 KiB max 32 MiB", bs)
				}
				if binary.BigEndian.Uint16(name) != 1 || string(name[2:]) != "ro" {
					t.Errorf("name info %q", name)
				}
			case "set meta":
				if id := binary.BigEndian.Uint32(replies[0].data); id == 0 || string(replies[0].data[4:]) != "base:allocation" {
					t.Errorf("set meta context reply %q", replies[0].data)
				}
			}
		}
		// Still negotiating after all that: GO works.
		rc.option(optGo, infoRequest("ro"))
		replies := rc.replies(optGo)
		if last := replies[len(replies)-1]; last.typ != repAck {
			t.Fatalf("go: %#x %q", last.typ, last.data)
		}
		flags := binary.BigEndian.Uint16(replies[0].data[10:])
		if flags&0x80 == 0 {
			t.Errorf("flags %#x lack SEND_DF after structured replies", flags)
		}
		rc.request(0, cmdRead, 7, 0, 4096, nil)
		data, errno, _ := assemble(t, rc.structured(), 0, 4096)
		if errno != 0 || !bytes.Equal(data, img[:4096]) {
			t.Errorf("read after go: errno %d, data equal %v", errno, bytes.Equal(data, img[:4096]))
		}
		rc.request(0, cmdDisc, 8, 0, 0, nil)
		rc.expectClosed()
	})
	t.Run("abort", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(3)
		rc.option(optAbort, nil)
		if r := rc.reply(); r.typ != repAck {
			t.Errorf("abort reply %#x", r.typ)
		}
		rc.expectClosed()
	})
	t.Run("export name unknown", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello(3)
		rc.option(optExportName, []byte("nope"))
		rc.expectClosed()
	})
	for _, tc := range []struct {
		name   string
		cflags uint32
		zeros  int
	}{{"export name", 1, 124}, {"export name no zeroes", 3, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, ts)
			rc.hello(tc.cflags)
			rc.option(optExportName, nil) // the default export
			var r struct {
				Size  uint64
				Flags uint16
			}
			rc.read(&r)
			if r.Size != 2<<20 || r.Flags != 1|4|8|32|64 {
				t.Errorf("export name reply size %d flags %#x", r.Size, r.Flags)
			}
			if z := rc.bytes(tc.zeros); !bytes.Equal(z, make([]byte, tc.zeros)) {
				t.Errorf("padding %x", z)
			}
			rc.request(0, cmdWrite, 1, 0, 3, []byte("abc"))
			if errno, h := rc.simple(); errno != 0 || h != 1 {
				t.Errorf("write: errno %d handle %d", errno, h)
			}
			rc.request(0, cmdRead, 2, 0, 3, nil)
			if errno, h := rc.simple(); errno != 0 || h != 2 {
				t.Errorf("read: errno %d handle %d", errno, h)
			}
			if got := rc.bytes(3); string(got) != "abc" {
				t.Errorf("read %q", got)
			}
		})
	}
	t.Run("handshake timeout", func(t *testing.T) {
		ts := startServer(t, nbdtest.NewResolver(nil), nbd.Options{HandshakeTimeout: 50 * time.Millisecond})
		rc := dialRaw(t, ts)
		rc.hello(3)
		rc.expectClosed()
	})
}

func TestTransmission(t *testing.T) {
	const size = 4 << 20
	img, _ := mixedImage(6, size, 64<<10)
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	rw := memImage(t, img, nbdtest.MemOptions{})
	rw.FailRange(3<<20, 4096, nbdtest.ErrInjected)
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"ro": ro, "rw": rw}),
		nbd.Options{MaxRequest: 1 << 20})

	for _, structured := range []bool{false, true} {
		name := map[bool]string{false: "simple", true: "structured"}[structured]
		t.Run(name, func(t *testing.T) {
			rc := dialRaw(t, ts)
			_, flags := rc.connect("rw", structured, structured)
			if flags&2 != 0 || flags&0x20 == 0 || flags&0x40 == 0 {
				t.Fatalf("rw flags %#x", flags)
			}
			// errCheck reads the reply to handle h and returns its errno.
			errCheck := func(h uint64) uint32 {
				t.Helper()
				got, errno := rc.anyReply()
				if got != h {
					t.Fatalf("reply for handle %d, want %d", got, h)
				}
				return errno
			}
			readBack := func(h, off uint64, n uint32) ([]byte, uint32) {
				t.Helper()
				rc.request(0, cmdRead, h, off, n, nil)
				if !structured {
					errno, got := rc.simple()
					if got != h {
						t.Fatalf("reply for handle %d, want %d", got, h)
					}
					if errno != 0 {
						return nil, errno
					}
					return rc.bytes(int(n)), 0
				}
				data, errno, _ := assemble(t, rc.structured(), off, int(n))
				return data, errno
			}
			for _, tc := range []struct {
				name       string
				flags, typ uint16
				off        uint64
				length     uint32
				payload    []byte
				want       uint32
			}{
				{"write", 0, cmdWrite, 4096, 5, []byte("hello"), 0},
				{"write fua", flagFUA, cmdWrite, 8192, 5, []byte("world"), 0},
				{"flush", 0, cmdFlush, 0, 0, nil, 0},
				{"write past end", 0, cmdWrite, size - 2, 5, []byte("12345"), enospc},
				{"write offset overflow", 0, cmdWrite, 1 << 63, 1, []byte("x"), enospc},
				{"write failing range", 0, cmdWrite, 3 << 20, 3, []byte("abc"), eio},
				{"write too large", 0, cmdWrite, 0, 1<<20 + 1, make([]byte, 1<<20+1), einval},
				{"write bad flag", flagDF, cmdWrite, 0, 1, []byte("x"), einval},
				{"trim past end", 0, cmdTrim, size, 1, nil, einval},
				{"zeroes past end", 0, cmdWriteZeroes, size, 1, nil, enospc},
				{"read past end", 0, cmdRead, size - 1, 2, nil, einval},
				{"read too large", 0, cmdRead, 0, 1<<20 + 1, nil, einval},
				{"read failing range", 0, cmdRead, 3<<20 - 1, 2, nil, eio},
				{"cache", 0, cmdCache, 0, 4096, nil, einval},
				{"unknown command", 0, 42, 0, 0, nil, einval},
				{"block status past end", 0, cmdBlockStatus, size, 1, nil, einval},
				{"block status empty", 0, cmdBlockStatus, 0, 0, nil, einval},
				{"read 0 bytes", 0, cmdRead, 0, 0, nil, 0},
			} {
				rc.request(tc.flags, tc.typ, 100, tc.off, tc.length, tc.payload)
				got := errCheck(100)
				if tc.typ == cmdRead && got == 0 && !structured {
					rc.bytes(int(tc.length))
				}
				if got != tc.want {
					t.Errorf("%s: errno %d, want %d", tc.name, got, tc.want)
				}
			}
			if !structured {
				// Block status needs a meta context.
				rc.request(0, cmdBlockStatus, 101, 0, 4096, nil)
				if got := errCheck(101); got != einval {
					t.Errorf("block status without context: errno %d, want %d", got, einval)
				}
			}
			// The connection survived all of that.
			if got, errno := readBack(102, 4096, 5); errno != 0 || string(got) != "hello" {
				t.Errorf("read back %q errno %d", got, errno)
			}
			if got, errno := readBack(103, 8192, 5); errno != 0 || string(got) != "world" {
				t.Errorf("read back %q errno %d", got, errno)
			}
			if rw.Flushes() < 2 {
				t.Errorf("%d flushes after FUA write and FLUSH", rw.Flushes())
			}
			rc.request(0, cmdDisc, 0, 0, 0, nil)
			rc.expectClosed()
			// Restore for the next subtest.
			if err := rw.Fill(img[4096:8192+5], 4096); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("read only", func(t *testing.T) {
		rc := dialRaw(t, ts)
		_, flags := rc.connect("ro", false, false)
		if flags&2 == 0 || flags&0x100 == 0 {
			t.Fatalf("ro flags %#x lack READ_ONLY or CAN_MULTI_CONN", flags)
		}
		for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
			var payload []byte
			if typ == cmdWrite {
				payload = []byte("nope")
			}
			rc.request(0, typ, 9, 0, 4, payload)
			if errno, _ := rc.simple(); errno != eperm {
				t.Errorf("command %d on read-only: errno %d, want EPERM", typ, errno)
			}
		}
		rc.request(0, cmdRead, 10, 0, 4, nil)
		if errno, _ := rc.simple(); errno != 0 {
			t.Fatalf("read: errno %d", errno)
		}
		if got := rc.bytes(4); !bytes.Equal(got, img[:4]) {
			t.Errorf("read %x", got)
		}
	})

	t.Run("trim and zeroes", func(t *testing.T) {
		m := &recorder{Mem: memImage(t, img, nbdtest.MemOptions{})}
		ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"d": m}), nbd.Options{})
		rc := dialRaw(t, ts)
		rc.connect("d", true, true)
		rc.request(0, cmdTrim, 1, 0, 128<<10, nil)
		rc.request(flagNoHole, cmdWriteZeroes, 2, 256<<10, 64<<10, nil)
		rc.request(flagFUA, cmdWriteZeroes, 3, 512<<10, 64<<10, nil)
		for range 3 {
			if h, errno := rc.anyReply(); errno != 0 {
				t.Fatalf("handle %d: errno %d", h, errno)
			}
		}
		if m.zeros.Load() != 2 || m.zeroWrites.Load() != 1 {
			t.Errorf("Zero called %d times, zeros written %d times; want 2 and 1", m.zeros.Load(), m.zeroWrites.Load())
		}
		if m.Flushes() != 1 {
			t.Errorf("%d flushes after one FUA write-zeroes", m.Flushes())
		}
		want := slices.Clone(img)
		for _, r := range [][2]int{{0, 128 << 10}, {256 << 10, 320 << 10}, {512 << 10, 576 << 10}} {
			clear(want[r[0]:r[1]])
		}
		if got := memBytes(t, m.Mem); !bytes.Equal(got, want) {
			t.Errorf("after trim and zeroes: %s", firstDiff(got, want))
		}
	})

	t.Run("holes and block status", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.connect("ro", true, true)
		exts, err := ro.Extents(context.Background(), 0, size)
		if err != nil {
			t.Fatal(err)
		}
		// Structured read of the whole disk (in 1 MiB requests): holes come
		// back as hole chunks, data as data.
		holes := 0
		for off := uint64(0); off < size; off += 1 << 20 {
			rc.request(0, cmdRead, off, off, 1<<20, nil)
			data, errno, h := assemble(t, rc.structured(), off, 1<<20)
			if errno != 0 || !bytes.Equal(data, img[off:off+1<<20]) {
				t.Fatalf("read at %d: errno %d, %s", off, errno, firstDiff(data, img[off:off+1<<20]))
			}
			holes += h
		}
		if holes == 0 {
			t.Errorf("no hole chunks in a read of a sparse disk")
		}
		// DF: one content chunk.
		rc.request(flagDF, cmdRead, 1, 0, 1<<20, nil)
		chunks := rc.structured()
		if len(chunks) != 1 || chunks[0].typ != chunkData {
			t.Errorf("DF read gave %d chunks, first type %d", len(chunks), chunks[0].typ)
		}
		// Block status matches the extents.
		rc.request(0, cmdBlockStatus, 2, 0, size, nil)
		chunks = rc.structured()
		if len(chunks) != 1 || chunks[0].typ != chunkBlockStatus {
			t.Fatalf("block status: %d chunks, type %d", len(chunks), chunks[0].typ)
		}
		d := chunks[0].data[4:]
		var pos int64
		for i := 0; i < len(d); i += 8 {
			n, st := int64(binary.BigEndian.Uint32(d[i:])), binary.BigEndian.Uint32(d[i+4:])
			x := exts[i/8]
			if x.Off != pos || x.Len != n || x.Hole != (st == 3) {
				t.Fatalf("descriptor %d: %d bytes status %d at %d, want %+v", i/8, n, st, pos, x)
			}
			pos += n
		}
		if pos != size {
			t.Errorf("descriptors cover %d bytes", pos)
		}
		rc.request(flagReqOne, cmdBlockStatus, 3, 0, size, nil)
		chunks = rc.structured()
		if len(chunks[0].data) != 12 || int64(binary.BigEndian.Uint32(chunks[0].data[4:])) != exts[0].Len {
			t.Errorf("REQ_ONE block status: %x", chunks[0].data)
		}
	})

	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined structured=%v", structured), func(t *testing.T) {
			rc := dialRaw(t, ts)
			rc.connect("ro", structured, false)
			rng := rand.New(rand.NewPCG(7, 7))
			type req struct{ off, n uint64 }
			reqs := map[uint64]req{}
			// Mixed sizes so small replies coalesce around large ones.
			sizes := []uint64{512, 4096, 4096, 4096, 64 << 10, 1 << 20}
			for h := range uint64(300) {
				n := sizes[rng.IntN(len(sizes))]
				off := uint64(rng.IntN(int(size-n)/512)) * 512
				reqs[h] = req{off, n}
				rc.request(0, cmdRead, h, off, uint32(n), nil)
			}
			for range len(reqs) {
				var h uint64
				var got []byte
				if structured {
					chunks := rc.structured()
					h = chunks[0].handle
					r, ok := reqs[h]
					if !ok {
						t.Fatalf("reply for unknown handle %d", h)
					}
					var errno uint32
					got, errno, _ = assemble(t, chunks, r.off, int(r.n))
					if errno != 0 {
						t.Fatalf("handle %d: errno %d", h, errno)
					}
				} else {
					var errno uint32
					errno, h = rc.simple()
					r, ok := reqs[h]
					if errno != 0 || !ok {
						t.Fatalf("reply errno %d for handle %d (known %v)", errno, h, ok)
					}
					got = rc.bytes(int(r.n))
				}
				r := reqs[h]
				if !bytes.Equal(got, img[r.off:r.off+r.n]) {
					t.Fatalf("handle %d (%d bytes at %d): %s", h, r.n, r.off, firstDiff(got, img[r.off:r.off+r.n]))
				}
				delete(reqs, h)
			}
		})
	}
}

// TestBadClients checks that garbage and clients vanishing mid-request do
// not take the server down or leave partial writes.
func TestBadClients(t *testing.T) {
	const size = 4 << 20
	img, _ := mixedImage(8, size, 64<<10)
	rw := memImage(t, img, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"rw": rw}), nbd.Options{})

	// A well-behaved client stays connected through it all.
	good := dialRaw(t, ts)
	good.connect("rw", true, false)

	rng := rand.New(rand.NewPCG(9, 9))
	garbage := make([]byte, 1<<16)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	for i := range 20 {
		rc := dialRaw(t, ts)
		switch i % 4 {
		case 0: // garbage instead of client flags and options
			rc.c.Write(garbage[i*101 : i*101+64+i*97])
		case 1: // garbage instead of requests
			rc.connect("rw", i%8 == 1, false)
			rc.c.Write(garbage[i*101 : i*101+64+i*97])
		case 2: // a write whose payload never fully arrives
			rc.connect("rw", false, false)
			rc.request(0, cmdWrite, 1, 0, 1<<20, garbage[:1000])
			rc.c.Close()
		case 3: // a client that goes away in the middle of option haggling
			rc.hello(3)
			rc.write(uint64(0x49484156454F5054), uint32(optGo), uint32(100), []byte("rw"))
			rc.c.Close()
		}
		if i%4 < 2 {
			rc.expectClosed()
		}
	}
	good.request(0, cmdRead, 1, 0, 4096, nil)
	if data, errno, _ := assemble(t, good.structured(), 0, 4096); errno != 0 || !bytes.Equal(data, img[:4096]) {
		t.Errorf("connected client after the bad ones: errno %d, data equal %v", errno, bytes.Equal(data, img[:4096]))
	}
	// A truncated write must not have reached the disk.
	rc := dialRaw(t, ts)
	rc.connect("rw", false, false)
	rc.request(0, cmdRead, 1, 0, 4096, nil)
	if errno, _ := rc.simple(); errno != 0 {
		t.Fatalf("read errno %d", errno)
	}
	if got := rc.bytes(4096); !bytes.Equal(got, img[:4096]) {
		t.Errorf("truncated write reached the disk")
	}
}

// TestSharedExport checks that connections share one opened export and
// that it is closed after the last one ends.
func TestSharedExport(t *testing.T) {
	m := nbdtest.NewMem(1<<20, nbdtest.MemOptions{})
	r := nbdtest.NewResolver(map[string]nbd.Export{"d": m})
	ts := startServer(t, r, nbd.Options{})
	a, b := dialRaw(t, ts), dialRaw(t, ts)
	a.connect("d", false, false)
	b.connect("d", false, false)
	if n := r.Opens("d"); n != 1 {
		t.Errorf("export opened %d times by two connections", n)
	}
	a.request(0, cmdWrite, 1, 0, 2, []byte("hi"))
	a.simple()
	b.request(0, cmdRead, 1, 0, 2, nil)
	b.simple()
	if got := b.bytes(2); string(got) != "hi" {
		t.Errorf("second connection reads %q", got)
	}
	a.request(0, cmdDisc, 0, 0, 0, nil)
	a.expectClosed()
	// Close happens after the connection goroutine ends; poll the
	// observable state rather than timing it.
	if m.Closes() != 0 {
		t.Errorf("export closed while a connection still uses it")
	}
	b.request(0, cmdDisc, 0, 0, 0, nil)
	b.expectClosed()
	deadline := time.Now().Add(10 * time.Second)
	for m.Closes() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.Closes() != 1 {
		t.Errorf("export closed %d times after both connections ended, want 1", m.Closes())
	}
}

// TestLargeRequests checks the 32 MiB request limit from both sides.
func TestLargeRequests(t *testing.T) {
	const size = 64 << 20
	m := nbdtest.NewMem(size, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"d": m}), nbd.Options{})
	rc := dialRaw(t, ts)
	rc.connect("d", true, false)
	big, _ := mixedImage(10, 32<<20, 64<<10)
	rc.request(flagFUA, cmdWrite, 1, 1<<20, uint32(len(big)), big)
	if h, errno := rc.anyReply(); h != 1 || errno != 0 {
		t.Fatalf("32 MiB write: handle %d errno %d", h, errno)
	}
	rc.request(0, cmdRead, 2, 1<<20, uint32(len(big)), nil)
	if data, errno, _ := assemble(t, rc.structured(), 1<<20, len(big)); errno != 0 || !bytes.Equal(data, big) {
		t.Fatalf("32 MiB read: errno %d, %s", errno, firstDiff(data, big))
	}
	rc.request(0, cmdRead, 3, 0, 32<<20+1, nil)
	if h, errno := rc.anyReply(); h != 3 || errno != einval {
		t.Errorf("read over 32 MiB: handle %d errno %d, want EINVAL", h, errno)
	}
	rc.request(0, cmdWrite, 4, 0, 32<<20+1, append(big, 1))
	if h, errno := rc.anyReply(); h != 4 || errno != einval {
		t.Errorf("write over 32 MiB: handle %d errno %d, want EINVAL", h, errno)
	}
	// Zeroing is not bound by the request limit.
	rc.request(0, cmdWriteZeroes, 5, 0, size-1<<20, nil)
	if h, errno := rc.anyReply(); h != 5 || errno != 0 {
		t.Errorf("write zeroes of 63 MiB: handle %d errno %d", h, errno)
	}
	if got := memBytes(t, m); !bytes.Equal(got, make([]byte, size)) {
		t.Errorf("after zeroing: %s", firstDiff(got, make([]byte, size)))
	}
}

// FuzzServer feeds arbitrary client bytes to a server; it must answer or
// hang up, never crash or hang, and keep serving others.
//
//	go test ./nbd -run '^$' -fuzz FuzzServer -fuzztime 60s
func FuzzServer(f *testing.F) {
	img, _ := mixedImage(12, 1<<20, 64<<10)
	ro := memImage(f, img, nbdtest.MemOptions{ReadOnly: true})
	rw := memImage(f, img, nbdtest.MemOptions{})
	ts := startServer(f, nbdtest.NewResolver(map[string]nbd.Export{"ro": ro, "rw": rw}),
		nbd.Options{Logger: discard(), MaxRequest: 1 << 20})

	opt := func(o uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, 0x49484156454F5054)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	req := func(flags, typ uint16, off uint64, n uint32, payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, 0x25609513)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		b = binary.BigEndian.AppendUint32(b, n)
		return append(b, payload...)
	}
	flags := []byte{0, 0, 0, 3}
	f.Add(slices.Concat(flags, opt(optList, nil), opt(optAbort, nil)))
	f.Add(slices.Concat(flags, opt(optStructured, nil), opt(optSetMeta, metaRequest("rw", "base:allocation")),
		opt(optGo, infoRequest("rw", 3)), req(0, cmdRead, 0, 4096, nil), req(0, cmdBlockStatus, 0, 1<<20, nil),
		req(flagFUA, cmdWrite, 10, 3, []byte("abc")), req(0, cmdTrim, 0, 4096, nil), req(0, cmdDisc, 0, 0, nil)))
	f.Add(slices.Concat(flags, opt(optExportName, []byte("ro")), req(0, cmdWrite, 0, 3, []byte("abc")),
		req(flagDF, cmdRead, 1<<20-1, 2, nil)))
	f.Add(slices.Concat(flags, opt(optInfo, infoRequest("nope")), opt(optListMeta, metaRequest("ro"))))
	f.Add([]byte("NBDMAGICIHAVEOPT garbage"))

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("unix", ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.UnixConn).CloseWrite()
		}()
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("server neither answered nor hung up: %v", err)
		}
		ok := dialRaw(t, ts)
		ok.connect("ro", false, false)
		ok.request(0, cmdRead, 1, 0, 16, nil)
		if errno, _ := ok.simple(); errno != 0 {
			t.Fatalf("healthy client after fuzz input: errno %d", errno)
		}
		if got := ok.bytes(16); !bytes.Equal(got, img[:16]) {
			t.Fatalf("healthy client reads %x", got)
		}
	})
}
