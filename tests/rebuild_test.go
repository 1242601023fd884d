package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// TestRecountReferences: after ordinary work every chunk's count already
// equals what the volumes and revisions name, so `repair
// --recount-references` changes nothing; it refuses while a server runs.
// Steps: back up files, copy one inside staging (dedup), rewrite another
// in place (dd conv=notrunc: the lazy base), truncate a third, delete a
// fourth; commit after each step; a block volume written twice the same;
// prune --keep-last 2; recount with the server running; strata stop;
// recount --json; recount again as text.
// Pass: the first recount exits 1 naming 'strata stop'; the --json
// recount reports chunks > 0, 0 changed, 0 missing; the text one says
// "0 counts changed"; the latest revision still reads back.
func TestRecountReferences(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	for i, n := range []int{3 << 20, 2 << 20, 5 << 20, 1 << 20} {
		writeRandom(t, filepath.Join(stage, fmt.Sprintf("f%d", i)), n, uint64(90+i))
	}
	r.must("commit", "home")
	sh(t, "cp", filepath.Join(stage, "f0"), filepath.Join(stage, "copy"))
	r.must("commit", "home")
	patch := filepath.Join(r.work, "patch")
	writeRandom(t, patch, 4096, 99)
	sh(t, "dd", "if="+patch, "of="+filepath.Join(stage, "f1"), "bs=4k", "seek=100", "conv=notrunc", "status=none")
	r.must("commit", "home")
	sh(t, "truncate", "-s", "1500000", filepath.Join(stage, "f2"))
	if err := os.Remove(filepath.Join(stage, "f3")); err != nil {
		t.Fatal(err)
	}
	r.must("commit", "home")
	r.must("volume", "create", "vm", "--block", "16M")
	vm := r.mkdir("mnt/vm")
	r.must("mount", "vm", vm)
	img := filepath.Join(r.work, "img")
	writeRandom(t, img, 8<<20, 98)
	for range 2 {
		sh(t, "dd", "if="+img, "of="+filepath.Join(vm, "disk.img"), "bs=1M", "conv=notrunc,fsync", "status=none")
		r.must("commit", "vm")
	}
	r.must("umount", vm)
	r.must("prune", "--keep-last", "2", "home", "vm")

	if res := r.run("repair", "--recount-references"); res.code != 1 || !strings.Contains(res.stderr, "strata stop") {
		t.Errorf("recount with a server running: exit %d, stderr %q; want exit 1 naming 'strata stop'", res.code, res.stderr)
	}
	r.must("stop")
	var rep struct{ Chunks, Changed, Missing int64 }
	if err := json.Unmarshal([]byte(r.must("--json", "repair", "--recount-references")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Chunks == 0 || rep.Changed != 0 || rep.Missing != 0 {
		t.Errorf("recount after ordinary work: %+v; want chunks, none changed, none missing", rep)
	}
	if out := r.must("repair", "--recount-references"); !strings.Contains(out, "0 counts changed") {
		t.Errorf("recount text: %q", out)
	}
	mnt := r.mountRevision("home@latest")
	want := make([]byte, 3<<20)
	fillRandom(want, 90)
	if got, err := os.ReadFile(filepath.Join(mnt, "copy")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("copy after the recounts: %d bytes, %v", len(got), err)
	}
}
