package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefetchFillsPageCache lists a directory of a revision and expects
// its small files in the kernel's page cache without a READ request, so
// that reading them afterwards costs no round trip; a file above
// prefetchMax is still read through READ.
func TestPrefetchFillsPageCache(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	st := testStaging(t, r, "d")
	dir := mountDir(t)
	m, err := MountStaging(ctx, dir, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for i := range 40 {
		want[fmt.Sprintf("small%02d", i)] = bytes.Repeat([]byte{byte(i + 1)}, 1+i*7919)
	}
	big := bytes.Repeat([]byte("big"), prefetchMax)
	files := map[string][]byte{"big": big}
	for name, data := range want {
		files[name] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	tree := commitTree(t, r, "d")
	c := newOpCounter()
	rm, err := MountTree(ctx, dir, tree, c.options(r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, rm)

	if _, err := os.ReadDir(dir); err != nil { // READDIRPLUS queues the small files
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for name := range want {
		for !inPageCache(t, filepath.Join(dir, name)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never reached the page cache", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: read %d bytes, want %d bytes of %#x", name, len(got), len(data), data[0])
		}
	}
	if n := c.count("READ"); n != 0 {
		t.Errorf("reading %d prefetched files sent %d READ requests, want none", len(want), n)
	}
	got, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("big: read %d bytes, want %d", len(got), len(big))
	}
	if c.count("READ") == 0 {
		t.Errorf("reading a %d-byte file sent no READ: the request log is not counting", len(big))
	}
}

// inPageCache reports whether every page of the file at p is resident in
// the page cache (mincore on a read-only mapping, which reads nothing).
func inPageCache(t *testing.T, p string) bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", p, err)
	}
	defer unix.Munmap(mem)
	vec := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore %s: %v", p, e)
	}
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}
