package fs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
)

// TestOpenForWriting: a staging mount lists the inodes with a handle
// open for writing (made by create or by open), each once however many
// handles it has, and forgets them once they are released; read-only
// handles and revision mounts list nothing.
func TestOpenForWriting(t *testing.T) {
	r, _, m, dir := stagingMount(t, "v")
	if err := os.WriteFile(filepath.Join(dir, "existing"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ino := func(name string) layers.Ino {
		t.Helper()
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return layers.Ino(fi.Sys().(*syscall.Stat_t).Ino)
	}
	for _, tc := range []struct {
		name  string
		file  string
		flags []int // one open(2) each, all held together
		write bool  // want the inode listed
	}{
		{"create", "new", []int{os.O_CREATE | os.O_WRONLY}, true},
		{"open for writing", "existing", []int{os.O_WRONLY}, true},
		{"open read-write twice", "existing", []int{os.O_RDWR, os.O_RDWR | os.O_APPEND}, true},
		{"read-only", "existing", []int{os.O_RDONLY}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []*os.File
			for _, fl := range tc.flags {
				f, err := os.OpenFile(filepath.Join(dir, tc.file), fl, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			var want []layers.Ino
			if tc.write {
				want = []layers.Ino{ino(tc.file)}
			}
			if got := m.OpenForWriting(); !slices.Equal(got, want) {
				t.Errorf("with %s open (flags %#x): OpenForWriting() = %v, want %v", tc.file, tc.flags, got, want)
			}
			for _, f := range files {
				f.Close()
			}
			// The kernel sends RELEASE after close(2) returns.
			deadline := time.Now().Add(5 * time.Second)
			for len(m.OpenForWriting()) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := m.OpenForWriting(); len(got) > 0 {
				t.Errorf("after closing %s: OpenForWriting() = %v, want none", tc.file, got)
			}
		})
	}

	tree := commitTree(t, r, "v")
	rdir := mountDir(t)
	rm, err := MountTree(context.Background(), rdir, tree, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, rm)
	f, err := os.Open(filepath.Join(rdir, "existing"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := rm.OpenForWriting(); got != nil {
		t.Errorf("revision mount: OpenForWriting() = %v, want nil", got)
	}
}
