package tests

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyImportEscrow restores a repository whose REPO/keys was lost from
// its escrow copy.
// Steps: init; write a file through the staging mount and commit; export
// an escrow copy under a passphrase and one to a gpg-made public key;
// export the escrow copy of a second repository. With REPO/keys intact
// and again after rm -rf REPO/keys: import with a wrong escrow
// passphrase, with none, the other repository's copy and a file that is
// none. Then import the right copy with a new passphrase, and the
// public-key copy with --identity.
// Pass: the bad imports exit non-zero naming the cause and leave REPO/keys
// as it was; the good import adds one entry that the new passphrase opens,
// and the file restores byte for byte; the identity import adds a second
// entry; gpg shows the escrow text, and the command it names exists.
func TestKeyImportEscrow(t *testing.T) {
	need(t, "gpg")
	r := newRepo(t)
	stage := r.mountNewVolume("v")
	data := make([]byte, 300<<10)
	rand.New(rand.NewSource(7)).Read(data)
	if err := os.WriteFile(filepath.Join(stage, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	r.must("umount", stage)
	r.must("commit", "v")
	r.must("stop")

	escrow := filepath.Join(r.work, "escrow.asc")
	if res := r.runEnv([]string{"STRATA_ESCROW_PASSPHRASE=escrow pass"}, "key", "export", "--escrow", escrow); res.code != 0 {
		t.Fatalf("key export: exit %d: %s", res.code, res.stderr)
	}
	g := newGPG(t)
	pub, sec := g.key("officer", "future-default", "default", "")
	escrowPub := filepath.Join(r.work, "escrow-pub.asc")
	if res := r.runEnv(nil, "key", "export", "--escrow", escrowPub, "--recipient", pub); res.code != 0 {
		t.Fatalf("key export --recipient: exit %d: %s", res.code, res.stderr)
	}
	other := newRepo(t)
	otherEscrow := filepath.Join(other.work, "escrow.asc")
	if res := other.runEnv([]string{"STRATA_ESCROW_PASSPHRASE=escrow pass"}, "key", "export", "--escrow", otherEscrow); res.code != 0 {
		t.Fatalf("other key export: exit %d: %s", res.code, res.stderr)
	}

	// The text a person sees with gpg names a command that exists.
	plain := g.gpg("--pinentry-mode", "loopback", "--passphrase", "escrow pass", "--decrypt", escrow)
	if !bytes.Contains(plain, []byte("strata key import --escrow")) {
		t.Errorf("escrow text does not say how to restore it:\n%s", plain)
	}
	if res := r.run("key", "import", "--help"); res.code != 0 || !strings.Contains(res.stdout, "--escrow") {
		t.Errorf("strata key import --help: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	garbage := filepath.Join(r.work, "garbage.asc")
	if err := os.WriteFile(garbage, []byte("not an escrow copy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		env  []string
		file string
		code int
		msgs []string
	}{
		{"wrong escrow passphrase", []string{"STRATA_ESCROW_PASSPHRASE=not it"}, escrow, 12, []string{"wrong escrow passphrase", "nothing was changed"}},
		{"no escrow passphrase", []string{"STRATA_ESCROW_PASSPHRASE="}, escrow, 2, []string{"no passphrase for the escrow copy", "STRATA_ESCROW_PASSPHRASE"}},
		{"other repository", []string{"STRATA_ESCROW_PASSPHRASE=escrow pass"}, otherEscrow, 12, []string{"escrow copy of repository", "not of this one", "nothing was changed"}},
		{"not an escrow copy", []string{"STRATA_ESCROW_PASSPHRASE=escrow pass"}, garbage, 1, []string{"is not a strata escrow copy", "nothing was changed"}},
	}
	for _, state := range []string{"keys intact", "keys lost"} {
		if state == "keys lost" {
			if err := os.RemoveAll(filepath.Join(r.dir, "keys")); err != nil {
				t.Fatal(err)
			}
			wantFail(t, "volume list without keys", r.run("volume", "list"), 12, "no key entries", "key import --escrow")
		}
		for _, c := range bad {
			before := r.keysSnapshot()
			env := append([]string{"STRATA_NEW_PASSPHRASE=new pass"}, c.env...)
			res := r.runEnv(env, "key", "import", "--escrow", c.file)
			wantFail(t, state+": "+c.name, res, c.code, c.msgs...)
			r.sameKeys(state+": "+c.name, before)
		}
	}

	res := r.runEnv([]string{"STRATA_ESCROW_PASSPHRASE=escrow pass", "STRATA_NEW_PASSPHRASE=new pass"}, "key", "import", "--escrow", escrow)
	if res.code != 0 {
		t.Fatalf("key import: exit %d: %s", res.code, res.stderr)
	}
	if ents := r.keyList(); len(ents) != 1 || ents[0].Kind != "passphrase" {
		t.Fatalf("after import: entries %+v, want one passphrase entry", ents)
	}
	wantFail(t, "old passphrase after import", r.run("volume", "list"), 12, "wrong passphrase")
	dest := filepath.Join(r.work, "restored")
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=new pass"}, "restore", "v@latest", dest); res.code != 0 {
		t.Fatalf("restore with the new passphrase: exit %d: %s", res.code, res.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restored file differs from what was written (err %v, %d bytes)", err, len(got))
	}

	// The other repository's copy is refused with entries present too.
	before := r.keysSnapshot()
	res = r.runEnv([]string{"STRATA_ESCROW_PASSPHRASE=escrow pass", "STRATA_NEW_PASSPHRASE=x"}, "key", "import", "--escrow", otherEscrow)
	wantFail(t, "other repository with entries", res, 12, "not of this one")
	r.sameKeys("other repository with entries", before)

	// An escrow copy made to a public key opens with its secret key.
	res = r.runEnv([]string{"STRATA_PASSPHRASE=", "STRATA_ESCROW_PASSPHRASE=", "STRATA_NEW_PASSPHRASE=third pass"}, "--identity", sec, "key", "import", "--escrow", escrowPub)
	if res.code != 0 {
		t.Fatalf("key import --identity: exit %d: %s", res.code, res.stderr)
	}
	if ents := r.keyList(); len(ents) != 2 {
		t.Fatalf("after identity import: %d entries, want 2", len(ents))
	}
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=third pass"}, "list", "v"); res.code != 0 {
		t.Errorf("passphrase from the identity import: exit %d: %s", res.code, res.stderr)
	}
}

// TestKeyRemove checks that removing a key entry needs a credential that
// unlocks the repository, keeps the user from locking themselves out, and
// takes id prefixes as revision ids do.
// Steps: init (entry A) and add entry B; remove B with a wrong passphrase,
// with none, by an unknown prefix and by an ambiguous one; remove A with
// A's passphrase, then with --force; remove B by a prefix; remove the last.
// Pass: every refused remove exits non-zero with a message naming the
// cause (the candidates for prefixes, --force for one's own entry) and
// leaves REPO/keys as it was; the allowed ones remove just their entry.
func TestKeyRemove(t *testing.T) {
	r := newRepo(t)
	if res := r.runEnv([]string{"STRATA_NEW_PASSPHRASE=second"}, "key", "add", "--label", "b"); res.code != 0 {
		t.Fatalf("key add: exit %d: %s", res.code, res.stderr)
	}
	ents := r.keyList()
	if len(ents) != 2 {
		t.Fatalf("entries %+v, want 2", ents)
	}
	a, b := ents[0].ID, ents[1].ID
	if ents[0].Label != "init" {
		a, b = b, a
	}
	// A copy of B whose id shares B's first 4 digits makes a prefix
	// ambiguous (ids are random, so they rarely share one by chance).
	twin := b[:4] + strings.Repeat("0", 12)
	if twin == b {
		twin = b[:4] + strings.Repeat("1", 12)
	}
	r.copyEntry(b, twin)

	refused := []struct {
		name string
		env  []string
		args []string
		code int
		msgs []string
	}{
		{"wrong passphrase", []string{"STRATA_PASSPHRASE=WRONG"}, []string{b}, 12, []string{"wrong passphrase"}},
		{"no passphrase", []string{"STRATA_PASSPHRASE="}, []string{b}, 12, []string{"no passphrase"}},
		{"unknown prefix", nil, []string{"ffffzz"}, 2, []string{`no key entry has id or id prefix "ffffzz"`, a, b}},
		{"ambiguous prefix", nil, []string{b[:4]}, 2, []string{"ambiguous", b, twin}},
		{"own entry", nil, []string{a}, 1, []string{"only one the given passphrase opens", "--force"}},
	}
	for _, c := range refused {
		before := r.keysSnapshot()
		res := r.runEnv(c.env, append([]string{"key", "remove"}, c.args...)...)
		wantFail(t, c.name, res, c.code, c.msgs...)
		r.sameKeys(c.name, before)
	}

	r.must("key", "remove", twin[:8])
	r.must("key", "remove", "--force", a)
	wantFail(t, "removed passphrase", r.run("volume", "list"), 12, "wrong passphrase")
	ents = r.keyList()
	if len(ents) != 1 || ents[0].ID != b {
		t.Fatalf("after removes: %+v, want only %s", ents, b)
	}
	before := r.keysSnapshot()
	res := r.runEnv([]string{"STRATA_PASSPHRASE=second"}, "key", "remove", "--force", b[:6])
	wantFail(t, "last entry", res, 1, "last key entry")
	r.sameKeys("last entry", before)
}

// TestKeyPasswdAndAdd checks that one passphrase is never left working
// through a second entry.
// Steps: init (entry A); copy A to a second entry (two entries with one
// passphrase, as 'key add' of the same passphrase used to make); add an
// entry with another passphrase; key passwd; key add of a passphrase that
// opens an entry; key passwd to a passphrase another entry has; key add
// --recipient of one public key twice; key passwd with only --identity.
// Pass: passwd changes both copies (the old passphrase opens nothing, the
// new one does, the other entry is untouched); the duplicate adds and the
// passwd to a taken passphrase are refused naming the entry and leave
// REPO/keys as it was; passwd with an identity says that it needs the
// current passphrase and what to do instead.
func TestKeyPasswdAndAdd(t *testing.T) {
	r := newRepo(t)
	a := r.keyList()[0].ID
	twin := "0123456789abcdef"
	if twin == a {
		twin = "fedcba9876543210"
	}
	r.copyEntry(a, twin)
	if res := r.runEnv([]string{"STRATA_NEW_PASSPHRASE=other"}, "key", "add", "--label", "other"); res.code != 0 {
		t.Fatalf("key add: exit %d: %s", res.code, res.stderr)
	}
	res := r.runEnv([]string{"STRATA_NEW_PASSPHRASE=changed"}, "key", "passwd")
	if res.code != 0 || !strings.Contains(res.stdout, a) || !strings.Contains(res.stdout, twin) {
		t.Fatalf("key passwd: exit %d, stdout %q, stderr %q; want both %s and %s changed", res.code, res.stdout, res.stderr, a, twin)
	}
	wantFail(t, "old passphrase after passwd", r.run("volume", "list"), 12, "wrong passphrase")
	for _, p := range []string{"changed", "other"} {
		if res := r.runEnv([]string{"STRATA_PASSPHRASE=" + p}, "volume", "list"); res.code != 0 {
			t.Errorf("passphrase %q after passwd: exit %d: %s", p, res.code, res.stderr)
		}
	}

	g := newGPG(t)
	pub, sec := g.key("admin", "future-default", "default", "")
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=changed"}, "key", "add", "--recipient", pub); res.code != 0 {
		t.Fatalf("key add --recipient: exit %d: %s", res.code, res.stderr)
	}
	refused := []struct {
		name string
		env  []string
		args []string
		code int
		msgs []string
	}{
		{"add a passphrase that opens an entry", []string{"STRATA_PASSPHRASE=changed", "STRATA_NEW_PASSPHRASE=other"}, []string{"key", "add"}, 2, []string{"already opens key entry"}},
		{"passwd to another entry's passphrase", []string{"STRATA_PASSPHRASE=changed", "STRATA_NEW_PASSPHRASE=other"}, []string{"key", "passwd"}, 2, []string{"already opens key entry"}},
		{"add a recipient twice", []string{"STRATA_PASSPHRASE=changed"}, []string{"key", "add", "--recipient", pub}, 2, []string{"already a recipient of key entry"}},
		{"passwd with only an identity", []string{"STRATA_PASSPHRASE=", "STRATA_NEW_PASSPHRASE=x"}, []string{"--identity", sec, "key", "passwd"}, 2, []string{"needs the current one", "STRATA_PASSPHRASE", "key add"}},
	}
	for _, c := range refused {
		before := r.keysSnapshot()
		res := r.runEnv(c.env, c.args...)
		wantFail(t, c.name, res, c.code, c.msgs...)
		if strings.Contains(res.stderr, "no passphrase or identity given") {
			t.Errorf("%s: says no identity was given although one was: %q", c.name, res.stderr)
		}
		r.sameKeys(c.name, before)
	}
}

// TestKeyMessages checks what users see when a credential is missing.
// Steps: init with a passphrase-protected gpg key as recipient; open it
// with --identity and no passphrase, then with the identity's passphrase;
// key export --escrow with no escrow passphrase (only
// STRATA_NEW_PASSPHRASE set).
// Pass: the identity error says the key is passphrase-protected and how to
// give it; with it the repository opens; export names
// --escrow-passphrase-file and STRATA_ESCROW_PASSPHRASE, not
// STRATA_NEW_PASSPHRASE, and writes no file.
func TestKeyMessages(t *testing.T) {
	g := newGPG(t)
	pub, sec := g.key("locked", "future-default", "default", "id pass")
	r := newRepo(t, "--recipient", pub)

	res := r.runEnv([]string{"STRATA_PASSPHRASE="}, "--identity", sec, "volume", "list")
	wantFail(t, "protected identity without its passphrase", res, 12, "passphrase-protected", "STRATA_PASSPHRASE")
	if strings.Contains(res.stderr, "wrong passphrase") {
		t.Errorf("protected identity: %q talks of a wrong passphrase where none was given", res.stderr)
	}
	if res := r.runEnv([]string{"STRATA_PASSPHRASE=id pass"}, "--identity", sec, "volume", "list"); res.code != 0 {
		t.Errorf("identity with its passphrase: exit %d: %s", res.code, res.stderr)
	}

	escrow := filepath.Join(r.work, "escrow.asc")
	res = r.runEnv([]string{"STRATA_ESCROW_PASSPHRASE=", "STRATA_NEW_PASSPHRASE=not for escrow"}, "key", "export", "--escrow", escrow)
	wantFail(t, "export without an escrow passphrase", res, 2, "--escrow-passphrase-file", "STRATA_ESCROW_PASSPHRASE")
	if strings.Contains(res.stderr, "STRATA_NEW_PASSPHRASE") {
		t.Errorf("export hint names STRATA_NEW_PASSPHRASE: %q", res.stderr)
	}
	if _, err := os.Stat(escrow); !os.IsNotExist(err) {
		t.Errorf("export without a passphrase left %s (stat: %v)", escrow, err)
	}
}
