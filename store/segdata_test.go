package store

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSegData: a segment's bytes read back as appended, with zeros past
// the end, whether they live in a scratch file, in memory, or moved from
// one to the other when the file stops taking writes.
func TestSegData(t *testing.T) {
	pieces := [][]byte{[]byte("chunk one|"), bytes.Repeat([]byte{7}, 70_000), []byte("|last")}
	var all []byte
	for _, p := range pieces {
		all = append(all, p...)
	}
	for _, tt := range []struct {
		name     string
		make     func(t *testing.T) *segData
		held     int  // pieces the new segData holds already
		wantFile bool // still in a file after the appends
	}{
		{"scratch file", func(t *testing.T) *segData { return newSegData(t.TempDir()) }, 0, true},
		{"no dir: memory", func(t *testing.T) *segData { return newSegData("") }, 0, false},
		{"dir missing: memory", func(t *testing.T) *segData {
			return newSegData(filepath.Join(t.TempDir(), "gone"))
		}, 0, false},
		{"file refuses writes: moved to memory", func(t *testing.T) *segData {
			// A file opened read-only fails WriteAt as a full disk
			// would; what it holds must survive the move.
			p := filepath.Join(t.TempDir(), "ro")
			if err := os.WriteFile(p, pieces[0], 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			return &segData{f: f, len: int64(len(pieces[0]))}
		}, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.make(t)
			defer d.close()
			for _, p := range pieces[tt.held:] {
				d.append(p)
			}
			if d.len != int64(len(all)) {
				t.Fatalf("len %d after appends, want %d", d.len, len(all))
			}
			if got := d.f != nil; got != tt.wantFile {
				t.Fatalf("bytes in a file: %v, want %v", got, tt.wantFile)
			}
			if tt.wantFile && d.mem != nil {
				t.Fatalf("%d bytes held in memory beside the scratch file", len(d.mem))
			}
			for _, r := range []struct{ off, n int }{{0, len(all)}, {3, 10}, {len(all) - 5, 5}, {len(all) - 5, 12}, {len(all) + 4, 8}} {
				got := bytes.Repeat([]byte{0xee}, r.n) // stale bytes readAt must overwrite
				if err := d.readAt(got, int64(r.off)); err != nil {
					t.Fatalf("readAt(%d, %d): %v", r.off, r.n, err)
				}
				want := make([]byte, r.n)
				if r.off < len(all) {
					copy(want, all[r.off:])
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("readAt(%d, %d): wrong bytes", r.off, r.n)
				}
			}
		})
	}
}

// TestRemoveSpools: scratch files a crash left are removed; journals stay.
func TestRemoveSpools(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{spoolPrefix + "123", "0000000000000001"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeSpools(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "0000000000000001" {
		t.Fatalf("left %v, want only the journal", ents)
	}
}

// TestOpenSegmentNotInHeap: the segment being filled keeps its bytes in
// its scratch file, not in memory, and its chunks read back from there.
func TestOpenSegmentNotInHeap(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 31, 5, 50_000) // well under one 1 MiB segment
	s.mu.Lock()
	for len(s.inflight) > 0 {
		s.cond.Wait()
	}
	open := s.open
	s.mu.Unlock()
	if open == nil || open.data.len == 0 {
		t.Fatal("no open segment with data; the test no longer sets up its case")
	}
	if open.data.f == nil || open.data.mem != nil {
		t.Fatalf("open segment in memory (%d bytes), want it in its scratch file", len(open.data.mem))
	}
	checkAll(t, s, want) // from the scratch file
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want) // from the shard files
}

// TestScratchDiskFull: with no room for scratch files (the journal dir on
// a full filesystem), segments fill in memory instead, and everything put
// seals, reads back and survives a reopen.
func TestScratchDiskFull(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	journal := filepath.Join(dir, "journal")
	if err := os.MkdirAll(journal, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", journal).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the store tests run as root, like make test): %v %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(journal, syscall.MNT_DETACH) })
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 41, 30, 100_000) // ~1.5 MiB: more than the 64 KiB
	s.mu.Lock()
	for len(s.inflight) > 0 {
		s.cond.Wait()
	}
	open := s.open
	s.mu.Unlock()
	if open == nil || open.data.len <= 64<<10 {
		t.Fatal("open segment within the scratch filesystem's room; the test no longer sets up its case")
	}
	if open.data.f != nil {
		t.Fatalf("open segment of %d bytes still in a scratch file on a 64 KiB filesystem", open.data.len)
	}
	checkAll(t, s, want)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	reopenChecked(t, s, dir, cfg, want)
}
