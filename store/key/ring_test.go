package key

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAddUnlockListRemove(t *testing.T) {
	r, dir := testRing(t)
	m := testMaster(1)
	a, err := r.AddPassphrase(m, []byte("alpha"), "laptop")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.AddPassphrase(m, []byte("bravo"), "ops")
	if err != nil {
		t.Fatal(err)
	}
	// Our own entries use Argon2 (S2K type 4) in a v6 SKESK packet.
	raw := dearmor(t, mustRead(t, filepath.Join(dir, a.ID+".asc")))
	if len(raw) < 8 || raw[0]&0x3f != 3 || raw[2] != 6 || raw[7] != 4 {
		t.Errorf("passphrase entry starts % x: want an SKESK v6 packet with Argon2 S2K", raw[:min(8, len(raw))])
	}
	list, err := r.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v; want 2 entries", list, err)
	}
	for _, e := range list {
		if e.Kind != KindPassphrase || !e.Created.Equal(testTime) || (e.Label != "laptop" && e.Label != "ops") {
			t.Errorf("entry %+v: unexpected fields", e)
		}
	}

	for _, c := range []struct {
		pass string
		want string
	}{{"alpha", a.ID}, {"bravo", b.ID}} {
		got, e, err := r.Unlock(Credentials{Passphrase: []byte(c.pass)})
		if err != nil || got != m || e.ID != c.want {
			t.Errorf("Unlock(%q) = entry %s, err %v, master ok %v; want entry %s", c.pass, e.ID, err, got == m, c.want)
		}
	}
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("charlie")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: err = %v, want ErrWrongPassphrase", err)
	}
	if _, _, err := r.Unlock(Credentials{}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no credentials: err = %v, want ErrNoCredentials", err)
	}

	// A reopened ring sees the same entries.
	r2, err := OpenRingOptions(dir, Options{Argon2: cheap})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := r2.Unlock(Credentials{Passphrase: []byte("bravo")}); err != nil || got != m {
		t.Fatalf("reopened ring: unlock err %v", err)
	}

	if err := r.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, a.ID+".asc")); !os.IsNotExist(err) {
		t.Errorf("message file of removed entry still there: %v", err)
	}
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("removed entry still unlocks: %v", err)
	}
	if err := r.Remove(b.ID); !errors.Is(err, ErrLastKey) {
		t.Errorf("remove last: err = %v, want ErrLastKey", err)
	}
	for _, id := range []string{a.ID, "0123456789abcdef", "../../etc/passwd", ""} {
		if err := r.Remove(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove(%q): err = %v, want ErrNotFound", id, err)
		}
	}
	if list, _ := r.List(); len(list) != 1 || list[0].ID != b.ID {
		t.Errorf("after removes List = %v, want only %s", list, b.ID)
	}
}

func TestEmptyRing(t *testing.T) {
	r, _ := testRing(t)
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("x")}); !errors.Is(err, ErrNoKeys) {
		t.Errorf("empty ring: err = %v, want ErrNoKeys", err)
	}
	if _, err := r.AddPassphrase(testMaster(1), nil, ""); err == nil {
		t.Error("empty passphrase accepted")
	}
}

func TestMasterMismatch(t *testing.T) {
	r, dir := testRing(t)
	e, err := r.AddPassphrase(testMaster(1), []byte("alpha"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddPassphrase(testMaster(2), []byte("bravo"), ""); !errors.Is(err, ErrMasterMismatch) {
		t.Errorf("adding another master key: err = %v, want ErrMasterMismatch", err)
	}
	// A message file swapped in from another repository is rejected.
	other, _ := testRing(t)
	oe, err := other.AddPassphrase(testMaster(3), []byte("alpha"), "")
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := os.ReadFile(filepath.Join(other.dir, oe.ID+".asc"))
	if err := os.WriteFile(filepath.Join(dir, e.ID+".asc"), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); err == nil {
		t.Error("unlock accepted a swapped-in key file of another master key")
	}
}

func TestTamperedEntry(t *testing.T) {
	r, dir := testRing(t)
	e, err := r.AddPassphrase(testMaster(1), []byte("alpha"), "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, e.ID+".asc")
	orig, _ := os.ReadFile(path)
	// Flip one bit in bytes of the binary message (armor's own checksum
	// would otherwise catch most flips first). Some header bytes are
	// redundant to the parser, so a flip may still open the entry, but
	// only ever to the right key; flips in the encrypted part never open.
	raw := dearmor(t, orig)
	// Skip the S2K specifier inside the first packet: a flipped Argon2
	// memory exponent asks for up to 2 GiB and only makes the test slow.
	skeskEnd := 2 + int(raw[1])
	for i := 0; i < len(raw); i++ {
		if i >= 6 && i < skeskEnd {
			continue
		}
		bad := bytes.Clone(raw)
		bad[i] ^= 0x10
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		m, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")})
		if err == nil && m != testMaster(1) {
			t.Fatalf("tampered byte %d of %d: unlocked to a wrong key", i, len(raw))
		}
		if err == nil && i >= len(raw)-64 {
			t.Fatalf("tampered byte %d of %d (encrypted part): unlocked", i, len(raw))
		}
	}
	os.WriteFile(path, orig, 0o600)
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); err != nil {
		t.Fatalf("restored entry: %v", err)
	}
}

func TestChangePassphrase(t *testing.T) {
	r, dir := testRing(t)
	m := testMaster(1)
	a, _ := r.AddPassphrase(m, []byte("alpha"), "a")
	b, _ := r.AddPassphrase(m, []byte("bravo"), "b")
	bMsg, _ := os.ReadFile(filepath.Join(dir, b.ID+".asc"))
	aMeta, _ := os.ReadFile(filepath.Join(dir, a.ID+".json"))

	if _, err := r.ChangePassphrase(Credentials{Passphrase: []byte("wrong")}, []byte("x")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("change with wrong passphrase: err = %v", err)
	}
	if _, err := r.ChangePassphrase(Credentials{Passphrase: []byte("alpha")}, []byte("charlie")); err != nil {
		t.Fatal(err)
	}
	if got, e, err := r.Unlock(Credentials{Passphrase: []byte("charlie")}); err != nil || got != m || e.ID != a.ID {
		t.Errorf("new passphrase: entry %s err %v", e.ID, err)
	}
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("old passphrase still works: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, b.ID+".asc")); !bytes.Equal(got, bMsg) {
		t.Error("other entry's message changed")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, a.ID+".json")); !bytes.Equal(got, aMeta) {
		t.Error("changed entry's metadata changed")
	}
	if list, _ := r.List(); len(list) != 2 {
		t.Errorf("entries after change: %d, want 2", len(list))
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestIdentityUnlock(t *testing.T) {
	r, _ := testRing(t)
	m := testMaster(1)
	alice := newIdentity(t, "Alice", nil)
	bob := newIdentity(t, "Bob", []byte("bobpass"))
	carol := newIdentity(t, "Carol", nil)
	if _, err := r.AddPassphrase(m, []byte("alpha"), "pw"); err != nil {
		t.Fatal(err)
	}
	e, err := r.AddRecipients(m, bytes.NewReader(append(bytes.Clone(alice.public), bob.public...)), "escrow")
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != KindRecipients || len(e.Recipients) != 2 || e.Recipients[0] != alice.fpr || e.Recipients[1] != bob.fpr {
		t.Fatalf("entry %+v: want recipients %s, %s", e, alice.fpr, bob.fpr)
	}
	cases := []struct {
		name    string
		c       Credentials
		wantErr error
	}{
		{"alice", Credentials{Identity: alice.secret}, nil},
		{"bob protected", Credentials{Identity: bob.secret, IdentityPassphrase: []byte("bobpass")}, nil},
		{"bob no passphrase", Credentials{Identity: bob.secret}, ErrWrongPassphrase},
		{"bob wrong passphrase", Credentials{Identity: bob.secret, IdentityPassphrase: []byte("nope")}, ErrWrongPassphrase},
		{"carol not a recipient", Credentials{Identity: carol.secret}, ErrNoMatchingKey},
		{"public key only", Credentials{Identity: alice.public}, ErrBadKey},
		{"garbage", Credentials{Identity: []byte("not a key")}, ErrBadKey},
		{"carol with the passphrase too", Credentials{Identity: carol.secret, Passphrase: []byte("alpha")}, nil},
	}
	for _, c := range cases {
		got, _, err := r.Unlock(c.c)
		if c.wantErr == nil {
			if err != nil || got != m {
				t.Errorf("%s: err %v, master ok %v", c.name, err, got == m)
			}
		} else if !errors.Is(err, c.wantErr) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.wantErr)
		}
	}
	if _, err := r.AddRecipients(m, bytes.NewReader([]byte("junk")), ""); !errors.Is(err, ErrBadKey) {
		t.Errorf("junk recipients: err = %v, want ErrBadKey", err)
	}
	if _, err := r.AddRecipients(m, nil, ""); !errors.Is(err, ErrBadKey) {
		t.Errorf("nil recipients: err = %v, want ErrBadKey", err)
	}
}

func TestMasterRedacted(t *testing.T) {
	m := testMaster(9)
	hexKey := hex.EncodeToString(m[:])
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("unlocked", "master", m)
	out := fmt.Sprintf("%v %s %x %X %#v %+v %q", m, m, m, m, m, m, m) + logs.String()
	if bytes.Contains([]byte(out), []byte(hexKey)) || bytes.Contains([]byte(out), []byte(hexKey[:16])) {
		t.Fatalf("master key leaked: %s", out)
	}
	if !bytes.Contains(logs.Bytes(), []byte("REDACTED")) {
		t.Errorf("log does not say REDACTED: %s", logs.String())
	}
}

func TestNewMaster(t *testing.T) {
	a, err1 := NewMaster()
	b, err2 := NewMaster()
	if err1 != nil || err2 != nil || a == b || a == (Master{}) {
		t.Fatalf("NewMaster: %v %v, distinct %v", err1, err2, a != b)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDuplicatesRefused(t *testing.T) {
	r, dir := testRing(t)
	m := testMaster(1)
	alice := newIdentity(t, "Alice", nil)
	bob := newIdentity(t, "Bob", nil)
	a, _ := r.AddPassphrase(m, []byte("alpha"), "")
	if _, err := r.AddPassphrase(m, []byte("bravo"), ""); err != nil {
		t.Fatal(err)
	}
	rec, err := r.AddRecipients(m, bytes.NewReader(alice.public), "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		add     func() error
		wantIDs []string
		wantFpr []string
	}{
		{"same passphrase", func() error { _, err := r.AddPassphrase(m, []byte("alpha"), ""); return err }, []string{a.ID}, nil},
		{"same key", func() error { _, err := r.AddRecipients(m, bytes.NewReader(alice.public), ""); return err }, []string{rec.ID}, []string{alice.fpr}},
		{"same key among others", func() error {
			_, err := r.AddRecipients(m, bytes.NewReader(append(bytes.Clone(bob.public), alice.public...)), "")
			return err
		}, []string{rec.ID}, []string{alice.fpr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadDir(dir)
			err := tt.add()
			var de *DuplicateError
			if !errors.As(err, &de) || !errors.Is(err, ErrDuplicate) || !slices.Equal(de.IDs, tt.wantIDs) || !slices.Equal(de.Fingerprints, tt.wantFpr) {
				t.Fatalf("err = %v (%+v); want DuplicateError ids %v fingerprints %v", err, de, tt.wantIDs, tt.wantFpr)
			}
			if after, _ := os.ReadDir(dir); len(after) != len(before) {
				t.Errorf("refused add changed the directory: %d files, was %d", len(after), len(before))
			}
		})
	}
}

func TestChangePassphraseEveryEntry(t *testing.T) {
	r, dir := testRing(t)
	m := testMaster(1)
	a, _ := r.AddPassphrase(m, []byte("alpha"), "a")
	b, _ := r.AddPassphrase(m, []byte("bravo"), "b")
	// A second entry with a's passphrase, as AddPassphrase allowed once.
	twin := "0123456789abcdef"
	meta := bytes.Replace(mustRead(t, filepath.Join(dir, a.ID+".json")), []byte(a.ID), []byte(twin), 1)
	os.WriteFile(filepath.Join(dir, twin+".asc"), mustRead(t, filepath.Join(dir, a.ID+".asc")), 0o600)
	os.WriteFile(filepath.Join(dir, twin+".json"), meta, 0o600)

	if _, got, err := r.Opening(Credentials{Passphrase: []byte("alpha")}); err != nil || len(got) != 2 {
		t.Fatalf("Opening(alpha) = %v, %v; want 2 entries", got, err)
	}
	if _, err := r.ChangePassphrase(Credentials{Passphrase: []byte("alpha")}, []byte("bravo")); !errors.Is(err, ErrDuplicate) {
		t.Errorf("change to another entry's passphrase: err = %v, want ErrDuplicate", err)
	}
	if _, err := r.ChangePassphrase(Credentials{Passphrase: []byte("alpha")}, []byte("alpha")); !errors.Is(err, ErrDuplicate) {
		t.Errorf("change to the same passphrase: err = %v, want ErrDuplicate", err)
	}
	changed, err := r.ChangePassphrase(Credentials{Passphrase: []byte("alpha")}, []byte("charlie"))
	if err != nil || len(changed) != 2 {
		t.Fatalf("ChangePassphrase = %v, %v; want both alpha entries", changed, err)
	}
	if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("old passphrase still opens an entry: %v", err)
	}
	if _, got, err := r.Opening(Credentials{Passphrase: []byte("charlie")}); err != nil || len(got) != 2 {
		t.Errorf("Opening(charlie) = %v, %v; want 2 entries", got, err)
	}
	if _, got, err := r.Opening(Credentials{Passphrase: []byte("bravo")}); err != nil || len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("Opening(bravo) = %v, %v; want only %s", got, err, b.ID)
	}
}

func TestResolve(t *testing.T) {
	r, dir := testRing(t)
	e, _ := r.AddPassphrase(testMaster(1), []byte("alpha"), "")
	// Shares three digits with e.ID and differs at the fourth, so five
	// digits tell them apart whatever e.ID is (a twin of zeros was
	// ambiguous at five digits when e.ID had "00" there).
	fourth := "0"
	if e.ID[3] == '0' {
		fourth = "1"
	}
	twin := e.ID[:3] + fourth + "000000000000"
	os.WriteFile(filepath.Join(dir, twin+".asc"), mustRead(t, filepath.Join(dir, e.ID+".asc")), 0o600)
	os.WriteFile(filepath.Join(dir, twin+".json"), bytes.Replace(mustRead(t, filepath.Join(dir, e.ID+".json")), []byte(e.ID), []byte(twin), 1), 0o600)
	tests := []struct {
		prefix string
		want   string // "" when an error is wanted
		check  func(error) bool
	}{
		{e.ID, e.ID, nil},
		{strings.ToUpper(e.ID[:5]), e.ID, nil},
		{twin[:5], twin, nil},
		{e.ID[:3], "", func(err error) bool { var ae *AmbiguousError; return errors.As(err, &ae) && len(ae.Matches) == 2 }},
		{"zz", "", func(err error) bool { return errors.Is(err, ErrNotFound) }},
		{"", "", func(err error) bool { return errors.Is(err, ErrNotFound) }},
	}
	for _, tt := range tests {
		got, err := r.Resolve(tt.prefix)
		if tt.want != "" && (err != nil || got.ID != tt.want) {
			t.Errorf("Resolve(%q) = %s, %v; want %s", tt.prefix, got.ID, err, tt.want)
		}
		if tt.want == "" && !tt.check(err) {
			t.Errorf("Resolve(%q): err = %v", tt.prefix, err)
		}
	}
}

func TestIdentityLockedError(t *testing.T) {
	r, _ := testRing(t)
	m := testMaster(1)
	bob := newIdentity(t, "Bob", []byte("bobpass"))
	if _, err := r.AddRecipients(m, bytes.NewReader(bob.public), ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pass  string
		given bool
	}{{"", false}, {"nope", true}} {
		_, _, err := r.Unlock(Credentials{Identity: bob.secret, IdentityPassphrase: []byte(tt.pass)})
		var le *IdentityLockedError
		if !errors.As(err, &le) || le.Given != tt.given || le.Fingerprint != bob.fpr || !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("identity passphrase %q: err = %v; want IdentityLockedError{Given: %v}", tt.pass, err, tt.given)
		}
	}
}
