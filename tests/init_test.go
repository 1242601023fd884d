package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitCleansUpAfterFailure checks that a failed init leaves nothing
// behind, so that running it again works.
// Steps: init with a sign-only public key as --recipient, into a new
// directory and into an existing empty one; init with a shard dir that is
// not empty; fix the cause and init again each time; init with only
// --recipient.
// Pass: each failure names its cause; afterwards the new directory is
// gone, the existing one is empty, the non-empty shard dir still holds its
// file and the shard dirs init made are gone; every retry succeeds; the
// recipient-only init names the key to keep safe and no passphrase.
func TestInitCleansUpAfterFailure(t *testing.T) {
	g := newGPG(t)
	signOnly, _ := g.key("signer", "ed25519", "sign", "")
	encPub, _ := g.key("escrow", "future-default", "default", "")
	work := t.TempDir()
	newAt := func(dir string) *repo {
		r := &repo{t: t, dir: dir, work: work}
		r.env = append(os.Environ(), "STRATA_REPO="+dir, "STRATA_PASSPHRASE=")
		t.Cleanup(r.cleanup)
		return r
	}

	fresh := newAt(filepath.Join(work, "a", "b", "repo"))
	wantFail(t, "init with a sign-only key", fresh.run("init", "--recipient", signOnly), 2, "no usable encryption key")
	if _, err := os.Stat(filepath.Join(work, "a")); !os.IsNotExist(err) {
		t.Errorf("failed init left %s behind (stat: %v)", filepath.Join(work, "a"), err)
	}
	out := fresh.must("init", "--recipient", encPub)
	if strings.Contains(out, "passphrase safe") || !strings.Contains(out, "Keep the secret key of") {
		t.Errorf("recipient-only init output:\n%s\nwant the key to keep safe, not a passphrase", out)
	}

	empty := newAt(filepath.Join(work, "empty"))
	if err := os.Mkdir(empty.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	wantFail(t, "init into an empty dir with a sign-only key", empty.run("init", "--recipient", signOnly), 2, "no usable encryption key")
	if ents, err := os.ReadDir(empty.dir); err != nil || len(ents) != 0 {
		t.Errorf("existing empty repository dir after failed init: %v entries, err %v; want it there and empty", len(ents), err)
	}
	empty.must("init", "--recipient", encPub)

	shards := newAt(filepath.Join(work, "sharded"))
	shards.env = append(shards.env, "STRATA_PASSPHRASE="+testPassphrase)
	full := filepath.Join(work, "disk1")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("not strata's"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The non-empty dir last: the store makes the others (and new/'s
	// parent) before it fails there, and the undo must take them back.
	args := []string{"init", "--shards", "2+1", "--shard-dir", filepath.Join(work, "disk0"), "--shard-dir", filepath.Join(work, "new", "disk1"), "--shard-dir", full}
	wantFail(t, "init with a non-empty shard dir", shards.run(args...), 1, "is not empty")
	for _, p := range []string{shards.dir, filepath.Join(work, "disk0"), filepath.Join(work, "new")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("failed init left %s behind (stat: %v)", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep")); err != nil || string(b) != "not strata's" {
		t.Fatalf("failed init touched the file in the non-empty shard dir: %q, %v", b, err)
	}
	if err := os.Remove(filepath.Join(full, "keep")); err != nil {
		t.Fatal(err)
	}
	shards.must(args...)
}
