package fs

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// TestUnlinkedWhileOpen: a file unlinked while open stays readable and
// writable through its handles, as POSIX wants, and goes with the last one.
func TestUnlinkedWhileOpen(t *testing.T) {
	r, _, m, dir := stagingMount(t, "v")
	for _, size := range []int{3000, 3 << 20} { // in memory, spooled
		p := filepath.Join(dir, "f")
		first := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(first)
		if err := os.WriteFile(p, first, 0o644); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		ro, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		more := []byte("written after the unlink")
		if _, err := w.WriteAt(more, int64(size)); err != nil {
			t.Fatalf("size %d: write after unlink: %v", size, err)
		}
		want := append(append([]byte(nil), first...), more...)
		got := make([]byte, len(want))
		if n, err := w.ReadAt(got, 0); err != nil || !bytes.Equal(got[:n], want) {
			t.Errorf("size %d: read back through the writer: %d bytes, %v, equal %v", size, n, err, bytes.Equal(got[:n], want))
		}
		if err := w.Close(); err != nil {
			t.Errorf("size %d: close writer: %v", size, err)
		}
		// The other handle still holds it.
		clear(got)
		if n, err := ro.ReadAt(got, 0); err != nil || !bytes.Equal(got[:n], want) {
			t.Errorf("size %d: read through the remaining handle: %d bytes, %v", size, n, err)
		}
		var stat syscall.Stat_t
		if err := syscall.Fstat(int(ro.Fd()), &stat); err != nil || stat.Nlink != 0 || stat.Size != int64(len(want)) {
			t.Errorf("size %d: fstat: nlink %d size %d, %v", size, stat.Nlink, stat.Size, err)
		}
		if err := ro.Close(); err != nil {
			t.Errorf("size %d: close reader: %v", size, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("size %d: unlinked name is back: %v", size, err)
		}
	}
	// Nothing of the unlinked files reaches a revision. The kernel sends
	// RELEASE after close(2) returns; unmounting waits for it, so the
	// commit cannot race the last Unhold.
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	rev, err := r.Commit(context.Background(), "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Files > 1 || rev.Size != 0 {
		t.Errorf("revision holds %d inodes, %d bytes; want only the empty root", rev.Files, rev.Size)
	}
}
