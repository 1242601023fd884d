package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBrowseLinksFollowCommits: the --all mount's VOLUME/latest and
// VOLUME/tags/<tag> follow new commits. QA: both kept naming the old
// revision for good (still after 65 s), since the kernel cached the
// symlink targets and the new ones have the same length.
// Steps: commit a file tree tagged a,b; mount --all; read latest,
// tags/a and tags/b (links and a file through them); change the file and
// commit again tagged a.
// Pass: within 10 s latest and tags/a name the new revision's directory
// and read the new content through it; tags/b still names the first.
func TestBrowseLinksFollowCommits(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("fsv")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(stage, "f"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	id1 := strings.TrimSpace(r.must("commit", "fsv", "--tag", "a,b"))
	all := r.mkdir("mnt/all")
	r.must("mount", "--all", all)
	vol := filepath.Join(all, "fsv")
	dirOf := func(id string) string {
		t.Helper()
		ents, err := os.ReadDir(vol)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), "_"+id[:8]) {
				return e.Name()
			}
		}
		t.Fatalf("no directory for revision %s in %s", id, vol)
		return ""
	}
	// state reads a link and the file through it.
	state := func(link string) (string, string) {
		tgt, err := os.Readlink(filepath.Join(vol, link))
		if err != nil {
			return "", err.Error()
		}
		b, err := os.ReadFile(filepath.Join(vol, link, "f"))
		if err != nil {
			return tgt, err.Error()
		}
		return tgt, string(b)
	}
	dir1 := dirOf(id1)
	for link, want := range map[string]string{"latest": dir1, "tags/a": "../" + dir1, "tags/b": "../" + dir1} {
		if tgt, content := state(link); tgt != want || content != "one" {
			t.Fatalf("%s -> %q reading %q; want -> %q reading one", link, tgt, content, want)
		}
	}

	write("two")
	id2 := strings.TrimSpace(r.must("commit", "fsv", "--tag", "a"))
	dir2 := dirOf(id2)
	for link, want := range map[string]string{"latest": dir2, "tags/a": "../" + dir2} {
		var tgt, content string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if tgt, content = state(link); tgt == want && content == "two" || time.Now().After(deadline) {
				break
			}
		}
		if tgt != want || content != "two" {
			t.Errorf("10 s after the commit %s -> %q reading %q; want -> %q reading two", link, tgt, content, want)
		}
	}
	if tgt, content := state("tags/b"); tgt != "../"+dir1 || content != "one" {
		t.Errorf("tags/b -> %q reading %q; want -> %q reading one", tgt, content, "../"+dir1)
	}
	r.must("umount", all)
	r.must("umount", stage)
}
