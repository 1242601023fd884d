package nbd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

func TestNbdinfo(t *testing.T) {
	needTools(t, "nbdinfo")
	img, lay := mixedImage(1, 8<<20, 64<<10)
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	rw := nbdtest.NewMem(4<<20, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"vm@1": ro, "vm": rw}), nbd.Options{})

	t.Run("list", func(t *testing.T) {
		for _, uri := range []string{ts.unixURI(""), ts.tcpURI("")} {
			out := run(t, "nbdinfo", "--list", "--json", uri)
			var got struct {
				Exports []struct {
					Name     string `json:"export-name"`
					Size     int64  `json:"export-size"`
					ReadOnly bool   `json:"is_read_only"`
				} `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
			}
			var names []string
			for _, e := range got.Exports {
				names = append(names, e.Name)
				want := map[string]struct {
					size int64
					ro   bool
				}{"vm@1": {8 << 20, true}, "vm": {4 << 20, false}}[e.Name]
				if e.Size != want.size || e.ReadOnly != want.ro {
					t.Errorf("%s: export %q size %d read-only %v, want %d %v", uri, e.Name, e.Size, e.ReadOnly, want.size, want.ro)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"vm", "vm@1"}) {
				t.Errorf("%s: exports %q, want [vm vm@1]\n%s", uri, names, out)
			}
		}
	})

	t.Run("flags", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			want map[string]bool
		}{
			{"vm@1", map[string]bool{"is_read_only": true, "can_multi_conn": true, "can_flush": true, "can_df": true,
				"can_trim": false, "can_zero": false, "can_cache": false}},
			{"vm", map[string]bool{"is_read_only": false, "can_multi_conn": false, "can_flush": true, "can_fua": true,
				"can_trim": true, "can_zero": true, "can_df": true}},
		} {
			out := run(t, "nbdinfo", "--json", ts.unixURI(tc.name))
			var got struct {
				Exports []map[string]any `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Exports) != 1 {
				t.Fatalf("nbdinfo --json: %v\n%s", err, out)
			}
			for k, v := range tc.want {
				if got.Exports[0][k] != v {
					t.Errorf("%s: %s = %v, want %v", tc.name, k, got.Exports[0][k], v)
				}
			}
			if ctx, _ := got.Exports[0]["contexts"].([]any); !slices.Contains(ctx, any("base:allocation")) {
				t.Errorf("%s: contexts %v lack base:allocation", tc.name, got.Exports[0]["contexts"])
			}
		}
	})

	t.Run("map", func(t *testing.T) {
		out := run(t, "nbdinfo", "--map", "--json", ts.tcpURI("vm@1"))
		var got []struct {
			Offset int64 `json:"offset"`
			Length int64 `json:"length"`
			Type   int   `json:"type"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
		}
		pos := int64(0)
		for _, e := range got {
			if e.Offset != pos {
				t.Fatalf("map entry at %d, want %d:\n%s", e.Offset, pos, out)
			}
			for off := e.Offset; off < e.Offset+e.Length; off += lay.block {
				wantType := 3 // hole, zero
				if lay.data[off/lay.block] {
					wantType = 0
				}
				if e.Type != wantType {
					t.Fatalf("block at %d has type %d, want %d:\n%s", off, e.Type, wantType, out)
				}
			}
			pos += e.Length
		}
		if pos != lay.size {
			t.Errorf("map covers %d bytes, want %d", pos, lay.size)
		}
	})

	t.Run("unknown export", func(t *testing.T) {
		out, err := runErr("nbdinfo", ts.unixURI("nope"))
		if err == nil {
			t.Fatalf("nbdinfo of an unknown export succeeded:\n%s", out)
		}
		// libnbd reports NBD_REP_ERR_UNKNOWN as ENOENT.
		if !strings.Contains(out, "No such file or directory") {
			t.Errorf("error is not NBD_REP_ERR_UNKNOWN:\n%s", out)
		}
	})
}

// recorder counts how writes and zeroing reach the export.
type recorder struct {
	*nbdtest.Mem
	zeros, zeroWrites atomic.Int64
}

func (r *recorder) Zero(ctx context.Context, off, length int64) error {
	r.zeros.Add(1)
	return r.Mem.Zero(ctx, off, length)
}

func (r *recorder) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if len(p) > 0 && bytes.Equal(p, make([]byte, len(p))) {
		r.zeroWrites.Add(1)
	}
	return r.Mem.WriteAt(ctx, p, off)
}

func TestNbdcopy(t *testing.T) {
	needTools(t, "nbdcopy", "cmp")
	const size, block = 128 << 20, 64 << 10
	img, lay := mixedImage(2, size, block)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeSparse(t, src, img, block)
	// The target starts full of junk so that skipped holes would show.
	junk := bytes.Repeat([]byte{0xee}, size)
	rw := memImage(t, junk, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"vm": rw}), nbd.Options{})

	run(t, "nbdcopy", src, ts.unixURI("vm"))
	if got := memBytes(t, rw); !bytes.Equal(got, img) {
		t.Fatalf("after nbdcopy in: %s", firstDiff(got, img))
	}
	exts, err := rw.Extents(context.Background(), 0, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range exts {
		for off := x.Off; off < x.Off+x.Len; off += block {
			if x.Hole == lay.data[off/block] {
				t.Fatalf("block at %d: hole=%v, want %v (holes must arrive as holes)", off, x.Hole, !lay.data[off/block])
			}
		}
	}

	for _, uri := range []string{ts.tcpURI("vm"), ts.unixURI("vm")} {
		out := filepath.Join(dir, "out.img")
		os.Remove(out)
		run(t, "nbdcopy", uri, out)
		run(t, "cmp", src, out)
	}
}

func TestQemuImg(t *testing.T) {
	needTools(t, "qemu-img", "cmp")
	const size, block = 64 << 20, 64 << 10
	img, _ := mixedImage(3, size, block)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeSparse(t, src, img, block)
	rw := nbdtest.NewMem(size, nbdtest.MemOptions{})
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"vm": rw, "vm@1": ro}), nbd.Options{})

	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, ts.unixURI("vm"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.tcpURI("vm"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ts.unixURI("vm"), ts.tcpURI("vm@1"))
	for i, uri := range []string{ts.tcpURI("vm@1"), ts.unixURI("vm")} {
		out := filepath.Join(dir, fmt.Sprintf("out%d.img", i))
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
		run(t, "cmp", src, out)
	}
	// A difference must be noticed.
	if err := rw.Fill([]byte{0x42}, size/2); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.unixURI("vm")); err == nil {
		t.Errorf("qemu-img compare missed a changed byte:\n%s", out)
	}
}

func TestQemuIO(t *testing.T) {
	needTools(t, "qemu-io")
	const size = 8 << 20
	rec := &recorder{Mem: nbdtest.NewMem(size, nbdtest.MemOptions{})}
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"vm": rec}), nbd.Options{})

	for _, uri := range []string{ts.unixURI("vm"), ts.tcpURI("vm")} {
		cmds := []string{
			"write -P 0xab 0 2M",
			"read -P 0xab 0 2M",
			"write -f -P 0xcd 2M 64k", // FUA
			"read -P 0xcd 2M 64k",
			"discard 0 128k",
			"read -P 0 0 128k",
			"read -P 0xab 128k 1920k",
			"write -z 1M 64k",       // NO_HOLE: zeros are written
			"write -z -u 1536k 64k", // may unmap: a hole
			"read -P 0 1M 64k",
			"read -P 0 1536k 64k",
			"read -P 0xab 1088k 448k",
			"aio_write -P 0x11 4M 64k",
			"aio_write -P 0x22 5M 64k",
			"aio_flush",
			"read -P 0x11 4M 64k",
			"read -P 0x22 5M 64k",
			"flush",
		}
		args := []string{"-f", "raw", uri}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out := run(t, "qemu-io", args...)
		if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "error") {
			t.Fatalf("qemu-io on %s:\n%s", uri, out)
		}
	}
	got := memBytes(t, rec.Mem)
	want := make([]byte, size)
	for i := 128 << 10; i < 2<<20; i++ {
		want[i] = 0xab
	}
	for i := 1 << 20; i < 1<<20+64<<10; i++ {
		want[i] = 0
	}
	for i := 1536 << 10; i < 1600<<10; i++ {
		want[i] = 0
	}
	for i := 2 << 20; i < 2<<20+64<<10; i++ {
		want[i] = 0xcd
	}
	for i := 4 << 20; i < 4<<20+64<<10; i++ {
		want[i] = 0x11
	}
	for i := 5 << 20; i < 5<<20+64<<10; i++ {
		want[i] = 0x22
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("disk after qemu-io: %s", firstDiff(got, want))
	}
	if rec.zeroWrites.Load() == 0 {
		t.Errorf("write -z (NO_HOLE) never wrote zeros")
	}
	if rec.zeros.Load() == 0 {
		t.Errorf("discard and write -z -u never punched a hole")
	}
	if rec.Flushes() == 0 {
		t.Errorf("FUA write and flush never flushed")
	}
}

// TestErrorReplies drives libnbd's Python binding with its client-side
// checks off, so bad requests reach the server.
func TestErrorReplies(t *testing.T) {
	// Debian's python3 has the binding; another python3 may come first
	// in PATH (exec resolves the name with the test's own PATH).
	const python = "/usr/bin/python3"
	needTools(t, python)
	if out, err := runErr(python, "-c", "import nbd"); err != nil {
		t.Fatalf("python3-libnbd not installed (contrib/install-deps.sh installs it): %s", out)
	}
	const size = 1 << 20
	img, _ := mixedImage(4, size, 64<<10)
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	rw := memImage(t, img, nbdtest.MemOptions{})
	rw.FailRange(size-128<<10, 64<<10, nbdtest.ErrInjected)
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"ro": ro, "rw": rw}), nbd.Options{})

	script := `
import errno, sys, nbd
size = int(sys.argv[3])

def expect(what, fn, code):
    try:
        fn()
    except nbd.Error as e:
        # Debian's binding reports the errno by name ("EPERM"), others by number.
        if e.errno not in (code, errno.errorcode.get(code)):
            sys.exit("%s: errno %s (%s), want %s" % (what, e.errno, e.string, code))
    else:
        sys.exit("%s: succeeded, want errno %d" % (what, code))

ro = nbd.NBD()
ro.set_strict_mode(0)
ro.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
ro.connect_uri(sys.argv[1])
assert ro.is_read_only() and ro.can_multi_conn()
first = ro.pread(4096, 0)
expect("write to read-only", lambda: ro.pwrite(b"x" * 4096, 0), errno.EPERM)
expect("trim on read-only", lambda: ro.trim(4096, 0), errno.EPERM)
expect("zero on read-only", lambda: ro.zero(4096, 0), errno.EPERM)
assert ro.pread(4096, 0) == first, "connection unusable after EPERM"
expect("read past the end", lambda: ro.pread(4096, size - 2048), errno.EINVAL)
expect("block status past the end", lambda: ro.block_status(4096, size, lambda *a: 0), errno.EINVAL)
assert ro.pread(4096, 0) == first, "connection unusable after EINVAL"
ro.shutdown()

rw = nbd.NBD()
rw.set_strict_mode(0)
rw.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
rw.connect_uri(sys.argv[2])
expect("write past the end", lambda: rw.pwrite(b"x" * 4096, size), errno.ENOSPC)
expect("read of a failing range", lambda: rw.pread(4096, size - 128 * 1024), errno.EIO)
expect("write of a failing range", lambda: rw.pwrite(b"y" * 4096, size - 128 * 1024), errno.EIO)
assert rw.pread(4096, 0) == first, "connection unusable after EIO"
rw.pwrite(b"z" * 4096, 8192, nbd.CMD_FLAG_FUA)
assert rw.pread(4096, 8192) == b"z" * 4096
exts = []
rw.block_status(size // 2, 0, lambda ctx, off, e, err: exts.extend(e), nbd.CMD_FLAG_REQ_ONE)  # clear of the failing range
assert len(exts) == 2, "REQ_ONE gave %d descriptors" % (len(exts) // 2)
rw.shutdown()
print("ok")
`
	out, err := runErr(python, "-c", script, ts.unixURI("ro"), ts.tcpURI("rw"), fmt.Sprint(size))
	if err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("python3 libnbd script: %v\n%s", err, out)
	}
}
