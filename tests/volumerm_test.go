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
