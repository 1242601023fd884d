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

	"github.com/strata-backup/strata/layers"
)

// TestPrefetchFillsPageCache lists a directory of a revision, mounted
// alone and in a browse mount, and expects its small files in the
// kernel's page cache without a READ request, so that reading them
// afterwards costs no round trip; a file above prefetchMax is still read
// through READ.
func TestPrefetchFillsPageCache(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// mount mounts the committed revision of volume d at mnt and
		// returns the directory its files are in.
		mount func(t *testing.T, r *layers.Repo, mnt string, opts Options) (*Mount, string, error)
	}{
		{"revision", func(t *testing.T, r *layers.Repo, mnt string, opts Options) (*Mount, string, error) {
			m, err := MountTree(ctx, mnt, commitTree(t, r, "d"), opts)
			return m, mnt, err
		}},
		{"browse", func(t *testing.T, r *layers.Repo, mnt string, opts Options) (*Mount, string, error) {
			commitTree(t, r, "d")
			m, err := MountBrowse(ctx, mnt, r, opts)
			return m, filepath.Join(mnt, "d", "latest"), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testPrefetchFillsPageCache(t, tc.mount) })
	}
}

func testPrefetchFillsPageCache(t *testing.T, mount func(*testing.T, *layers.Repo, string, Options) (*Mount, string, error)) {
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	m, err := MountStaging(context.Background(), mnt, st, testOpts(t, r))
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
		if err := os.WriteFile(filepath.Join(mnt, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	c := newOpCounter()
	rm, dir, err := mount(t, r, mnt, c.options(r))
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
	f, fi := openStat(t, p)
	defer f.Close()
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
