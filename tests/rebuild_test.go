package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRebuildIndexFromShards loses the whole badger index.
// Steps: back up a tree into an fs volume and an image into a block volume
// (two revisions each); stop the server; delete REPO/index; run
// `strata repair --rebuild-index`; list, mount and compare.
// Pass: both volumes and all four revisions come back with their ids;
// each revision reads back identical to its source.
func TestRebuildIndexFromShards(t *testing.T) {
	need(t, "rsync", "nbdcopy", "qemu-img")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 200, 9)
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-a", src+"/", stage+"/")
	id1 := strings.TrimSpace(r.must("commit", "home"))
	os.WriteFile(filepath.Join(src, "later.txt"), []byte("later\n"), 0o644)
	sh(t, "rsync", "-a", src+"/", stage+"/")
	id2 := strings.TrimSpace(r.must("commit", "home"))
	r.must("umount", stage)

	img := filepath.Join(r.work, "disk.img")
	makeImage(t, img, 64<<20, 11)
	r.must("volume", "create", "vm", "--block", "64M")
	sock, uri := r.serveNBD()
	sh(t, "nbdcopy", img, uri("vm"))
	b1 := strings.TrimSpace(r.must("commit", "vm"))
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	r.must("stop")

	if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
		t.Fatal(err)
	}
	out := r.must("repair", "--rebuild-index")
	if !strings.Contains(out, "2 volumes") {
		t.Errorf("repair output: %s", out)
	}
	list := r.must("list")
	for _, id := range []string{id1, id2, b1} {
		if !strings.Contains(list, id[:8]) {
			t.Errorf("revision %s missing after rebuild:\n%s", id[:8], list)
		}
	}
	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@"+id2, rev)
	if out := itemize(t, src, rev); out != "" {
		t.Errorf("rebuilt revision differs:\n%s", out)
	}
	r.must("umount", rev)
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri("vm@latest"))
	r.must("nbd", "stop", "--listen", "unix:"+sock)
	if out := r.must("scrub"); !strings.Contains(out, "no damage") {
		t.Errorf("scrub after rebuild:\n%s", out)
	}
}

// TestRebuildKeepsProtectionAndRenamedVolume: after the index is lost, a
// user who sees an empty repository creates the volume again and backs up
// into it. The rebuild used to keep only the new volume (the old one's
// revisions came back as garbage for the next prune) and to drop
// protection. Now both lineages come back, the old under a new name, and
// the protected revision is still protected.
func TestRebuildKeepsProtectionAndRenamedVolume(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("va")
	os.WriteFile(filepath.Join(stage, "a"), []byte("first\n"), 0o644)
	old1 := strings.TrimSpace(r.must("commit", "va"))
	os.WriteFile(filepath.Join(stage, "b"), []byte("second\n"), 0o644)
	old2 := strings.TrimSpace(r.must("commit", "va"))
	r.must("protect", "va@"+old1[:8])
	r.must("protect", "va@"+old2[:8])
	r.must("unprotect", "va@"+old2[:8])
	r.must("stop")

	if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
		t.Fatal(err)
	}
	r.must("volume", "create", "va")
	r.must("mount", "va", stage)
	os.WriteFile(filepath.Join(stage, "x"), []byte("after the loss\n"), 0o644)
	new1 := strings.TrimSpace(r.must("commit", "va"))
	r.must("stop")

	out := r.must("repair", "--rebuild-index")
	renamed := "va." // the old volume's id follows
	if !strings.Contains(out, "back as volume "+renamed) {
		t.Fatalf("repair does not say the old va came back renamed:\n%s", out)
	}
	var revs []struct {
		Volume    string
		ID        string
		Protected bool
	}
	if err := json.Unmarshal([]byte(r.must("list", "--json")), &revs); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rv := range revs {
		state := rv.Volume
		if strings.HasPrefix(rv.Volume, renamed) {
			state = renamed
		}
		if rv.Protected {
			state += " protected"
		}
		got[rv.ID] = state
	}
	want := map[string]string{old1: renamed + " protected", old2: renamed, new1: "va"}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("revision %s after the rebuild: %q, want %q (all: %v)", id[:8], got[id], w, got)
		}
	}
}
