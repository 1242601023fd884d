package fs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
)

func writeStaging(t *testing.T, st *layers.Staging, name, data string) {
	t.Helper()
	ctx := context.Background()
	a, err := st.Tree().Lookup(ctx, layers.RootIno, name)
	if err != nil {
		a, err = st.Create(ctx, layers.RootIno, name, syscall.S_IFREG|0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.WriteAt(ctx, a.Ino, []byte(data), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FlushFile(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
}

func ls(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestBrowse(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	st := testStaging(t, r, "files")
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

	writeStaging(t, st, "f", "one")
	rev1, err := r.Commit(ctx, "files", layers.CommitOptions{Time: t0, Tags: []string{"daily", "weekly"}})
	if err != nil {
		t.Fatal(err)
	}
	writeStaging(t, st, "f", "two")
	rev2, err := r.Commit(ctx, "files", layers.CommitOptions{Time: t0.Add(time.Hour), Tags: []string{"daily"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVolume(ctx, "empty", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}

	mnt := mountDir(t)
	m, err := MountBrowse(ctx, mnt, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)

	if got, want := ls(t, mnt), []string{"empty", "files"}; !slices.Equal(got, want) {
		t.Errorf("root: %v, want %v", got, want)
	}
	d1, d2 := RevisionDirName(rev1), RevisionDirName(rev2)
	if d1 != "2026-11-20T10:00:00Z_"+rev1.ID[:8] {
		t.Errorf("revision dir name %q", d1)
	}
	if got, want := ls(t, filepath.Join(mnt, "files")), []string{d1, d2, "latest", "tags"}; !slices.Equal(got, want) {
		t.Errorf("files/: %v, want %v", got, want)
	}
	if got, want := ls(t, filepath.Join(mnt, "files", "tags")), []string{"daily", "weekly"}; !slices.Equal(got, want) {
		t.Errorf("files/tags: %v, want %v", got, want)
	}
	if got := ls(t, filepath.Join(mnt, "empty")); !slices.Equal(got, []string{"tags"}) {
		t.Errorf("empty/: %v", got)
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for p, want := range map[string]string{
		"files/" + d1 + "/f":  "one",
		"files/" + d2 + "/f":  "two",
		"files/latest/f":      "two",
		"files/tags/daily/f":  "two",
		"files/tags/weekly/f": "one",
	} {
		if got := read(p); got != want {
			t.Errorf("%s: %.20q, want %.20q", p, got, want)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(mnt, "files", "tags", "weekly")); err != nil || tgt != "../"+d1 {
		t.Errorf("tags/weekly -> %q, %v", tgt, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "files", d1, "g"), nil, 0o644); !isErrno(err, syscall.EROFS) {
		t.Errorf("create in browse mount: %v, want EROFS", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "nosuch")); !os.IsNotExist(err) {
		t.Errorf("unknown volume: %v, want ENOENT", err)
	}
	// A revision committed after mounting shows up.
	writeStaging(t, st, "f", "three")
	rev4, err := r.Commit(ctx, "files", layers.CommitOptions{Time: t0.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := read("files/" + RevisionDirName(rev4) + "/f"); got != "three" {
		t.Errorf("new revision: %q", got)
	}
	// latest, read above, follows it: the kernel kept a symlink's target
	// for good, and the new one has the same length.
	if tgt, err := os.Readlink(filepath.Join(mnt, "files", "latest")); err != nil || tgt != RevisionDirName(rev4) {
		t.Errorf("latest -> %q, %v after a commit; want %q", tgt, err, RevisionDirName(rev4))
	}
}

// TestShowableTag: the tags the --all mount lists; the kernel fails a
// whole directory listing on a name it cannot take (EIO).
func TestShowableTag(t *testing.T) {
	for _, tt := range []struct {
		tag  string
		want bool
	}{
		{"daily", true},
		{"3", true}, // refused by CheckTag now, but a fine file name
		{"a b", true},
		{strings.Repeat("t", 255), true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/", false},
		{"a\x00b", false},
		{strings.Repeat("t", 256), false},
	} {
		if got := showableTag(tt.tag); got != tt.want {
			t.Errorf("showableTag(%q) = %v, want %v", tt.tag, got, tt.want)
		}
	}
}

// TestBrowseBlock: a block volume's revisions show disk.img.
func TestBrowseBlock(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	if _, err := r.CreateVolume(ctx, "vm", layers.VolumeSpec{Type: layers.TypeBlock, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	d, err := r.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(ctx, []byte("boot sector"), 0); err != nil {
		t.Fatal(err)
	}
	rev, err := r.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountDir(t)
	m, err := MountBrowse(ctx, mnt, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	if got := ls(t, filepath.Join(mnt, "vm", RevisionDirName(rev))); !slices.Equal(got, []string{DiskImageName}) {
		t.Errorf("vm revision: %v", got)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "vm", "latest", DiskImageName))
	if err != nil {
		t.Fatal(err)
	}
	if want := "boot sector" + string(make([]byte, 8<<20-11)); string(b) != want {
		t.Errorf("disk.img: %d bytes starting %.12q", len(b), b)
	}
	if err := os.WriteFile(filepath.Join(mnt, "vm", "latest", DiskImageName), []byte("x"), 0o644); !isErrno(err, syscall.EROFS) {
		t.Errorf("write to browse disk.img: %v, want EROFS", err)
	}
}
