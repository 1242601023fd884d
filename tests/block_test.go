package tests

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeImage writes a raw disk image of size with data runs and holes.
func makeImage(t testing.TB, path string, size int64, seed int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += 8 << 20 {
		// 3 MiB of data in every 8 MiB, the rest a hole; some compressible.
		rng.Read(buf)
		if (off/(8<<20))%3 == 0 {
			copy(buf, strings.Repeat("compressible text ", len(buf)/18))
		}
		for i := int64(0); i < 3 && off+i<<20 < size; i++ {
			if _, err := f.WriteAt(buf, off+i<<20); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestBlockVolumeNBD is the block story through real NBD clients.
// Steps: create a 256 MiB block volume; serve NBD on a unix socket;
// nbdcopy an image with data and holes into staging; commit; nbdinfo the
// export list, the read-only flag and the map of the revision; nbdcopy the
// revision out; qemu-img compare both ways; write a few scattered blocks
// with qemu-io, commit again; the first revision is unchanged.
// Pass: copies are byte-identical (cmp via sha256), the revision export is
// read-only, the map shows holes, revision 1 still equals the first image.
func TestBlockVolumeNBD(t *testing.T) {
	need(t, "nbdcopy", "nbdinfo", "qemu-img", "qemu-io")
	r := newRepo(t)
	img := filepath.Join(r.work, "disk.img")
	makeImage(t, img, 1<<30, 7)
	r.must("volume", "create", "vm", "--block", "1G")
	sock := filepath.Join(r.work, "nbd.sock")
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	uri := func(export string) string { return "nbd+unix:///" + export + "?socket=" + sock }

	sh(t, "nbdcopy", img, uri("vm"))
	r.must("commit", "vm", "--tag", "one")
	list := sh(t, "nbdinfo", "--list", uri(""))
	if !strings.Contains(list, "vm") {
		t.Errorf("nbdinfo --list does not show vm:\n%s", list)
	}
	info := sh(t, "nbdinfo", uri("vm@latest"))
	if !strings.Contains(info, "is_read_only: true") {
		t.Errorf("revision export not advertised read-only:\n%s", info)
	}
	m := sh(t, "nbdinfo", "--map", uri("vm@latest"))
	if !strings.Contains(m, "hole") {
		t.Errorf("nbdinfo --map shows no holes:\n%s", m)
	}
	out := filepath.Join(r.work, "out.img")
	sh(t, "nbdcopy", uri("vm@one"), out)
	if fileSum(t, out) != fileSum(t, img) {
		t.Fatal("image copied out of the revision differs from the one copied in")
	}
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@latest"))

	// Change scattered blocks through qemu-io, commit, compare.
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 4k", "-c", "write -P 0xcd 100M 64k", "-c", "write -z 2M 1M", uri("vm"))
	r.must("commit", "vm", "--tag", "two")
	sh(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 1M 4k", "-c", "read -P 0xcd 100M 64k", "-c", "read -P 0 2M 1M", uri("vm@two"))
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@one"))
	if exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@two")).Run() == nil {
		t.Error("revision two equals the original image although blocks were written")
	}
	// The revisions differ only in the 64 KiB blocks those writes touched.
	diff := r.must("diff", "vm@one", "vm@two")
	for _, line := range strings.Split(strings.TrimSpace(diff), "\n") {
		var from, to int64
		if _, err := fmt.Sscanf(line, "M disk.img bytes %d-%d", &from, &to); err != nil {
			t.Errorf("unexpected diff line %q", line)
			continue
		}
		inside := func(lo, hi int64) bool { return from >= lo && to < hi }
		if !inside(1<<20, 1<<20+64<<10) && !inside(2<<20, 3<<20) && !inside(100<<20, 100<<20+64<<10) {
			t.Errorf("diff reports bytes %d-%d changed, outside what was written", from, to)
		}
	}
	// Over TCP too: qemu-img convert from an nbd:// URI.
	tcp := "127.0.0.1:" + freePort(t)
	r.must("nbd", "serve", "--listen", "tcp://"+tcp)
	conv := filepath.Join(r.work, "conv.img")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd://"+tcp+"/vm@one", conv)
	if fileSum(t, conv) != fileSum(t, img) {
		t.Error("qemu-img convert over TCP gave a different image")
	}
	r.must("nbd", "stop", "--listen", "tcp://"+tcp)
	r.must("nbd", "stop", "--listen", "unix:"+sock)

	// Overlay: writes to a revision export land in a throwaway layer.
	r.must("nbd", "serve", "--listen", "unix:"+sock, "--overlay")
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 0 64k", "-c", "read -P 0x77 0 64k", uri("vm@one"))
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@one"))
	// A read-only export refuses writes with EPERM and stays usable.
	wout, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", uri("vm@one")).CombinedOutput()
	if err == nil && !strings.Contains(string(wout), "Operation not permitted") && !strings.Contains(string(wout), "read-only") {
		t.Errorf("write to a read-only revision export succeeded:\n%s", wout)
	}
	// Beyond the end: an error reply, the connection survives.
	rout, _ := exec.Command("qemu-io", "-f", "raw", "-c", "read 1100M 4k", uri("vm")).CombinedOutput()
	if !strings.Contains(string(rout), "rror") && !strings.Contains(string(rout), "out of") {
		t.Errorf("read beyond the end did not fail:\n%s", rout)
	}
	r.must("nbd", "stop", "--listen", "unix:"+sock)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
