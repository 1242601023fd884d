package tests

import (
	"strings"
	"testing"
)

// TestVolumeRmWhileNBDServes: an NBD server started without --export
// serves block volumes only, so it does not keep a file tree from being
// removed. QA: "volume ev is exported by the NBD server on unix:S".
// Steps: a file-tree volume and a block volume; nbd serve without
// --export; volume rm each.
// Pass: the file tree is removed; the block volume is refused, naming
// the NBD server.
func TestVolumeRmWhileNBDServes(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "ev")
	r.must("volume", "create", "vm", "--block", "16M")
	sock, _ := r.serveNBD()
	if res := r.run("volume", "rm", "ev"); res.code != 0 {
		t.Errorf("volume rm of a file tree under nbd serve: exit %d, stderr %q", res.code, res.stderr)
	}
	if res := r.run("volume", "rm", "vm"); res.code == 0 || !strings.Contains(res.stderr, "exported by the NBD server on unix:"+sock) {
		t.Errorf("volume rm of a block volume under nbd serve: exit %d, stderr %q; want the server named", res.code, res.stderr)
	}
	if out := r.must("volume", "list"); strings.Contains(out, "ev ") || !strings.Contains(out, "vm ") {
		t.Errorf("volume list after the removals:\n%s", out)
	}
}

// TestVolumeRmProtected: volume rm --force refuses a volume with
// protected revisions and names them; without --force the refusal counts
// them. QA: --force deleted protected revisions without a word.
// Steps: a volume with five revisions, four of them protected; volume
// rm, volume rm --force; unprotect them; volume rm --force.
// Pass: both refusals exit non-zero; the plain one says "5 revisions, 4
// of them protected", the forced one "4 protected revisions", names
// three ids "and 1 more", and hints at strata unprotect; the volume and
// its revisions are still there; once unprotected, --force removes it.
func TestVolumeRmProtected(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "home")
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, strings.TrimSpace(r.must("commit", "home")))
	}
	for _, id := range ids[1:] {
		r.must("protect", "home@"+id)
	}
	res := r.run("volume", "rm", "home")
	if res.code == 0 || !strings.Contains(res.stderr, "volume home has 5 revisions, 4 of them protected") || !strings.Contains(res.stderr, "strata unprotect home@") {
		t.Errorf("volume rm: exit %d, stderr %q; want 5 revisions, 4 protected, and the unprotect hint", res.code, res.stderr)
	}
	res = r.run("volume", "rm", "home", "--force")
	want := "volume home has 4 protected revisions (" + ids[1][:8] + ", " + ids[2][:8] + ", " + ids[3][:8] + " and 1 more), which --force does not remove"
	if res.code == 0 || !strings.Contains(res.stderr, want) || !strings.Contains(res.stderr, "strata unprotect home@") {
		t.Errorf("volume rm --force: exit %d, stderr %q; want %q and the unprotect hint", res.code, res.stderr, want)
	}
	if out := r.must("list", "home"); !strings.Contains(out, "5 revisions,") {
		t.Fatalf("after the refused removals:\n%s", out)
	}
	for _, id := range ids[1:] {
		r.must("unprotect", "home@"+id)
	}
	r.must("volume", "rm", "home", "--force")
	if out := r.must("volume", "list"); strings.Contains(out, "home") {
		t.Errorf("volume list after volume rm --force:\n%s", out)
	}
}
