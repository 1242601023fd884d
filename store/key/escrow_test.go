package key

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func dearmor(t testing.TB, b []byte) []byte {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("dearmor: %v", err)
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(block.Body); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func escrow(t testing.TB, m Master, pass []byte, pub []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var keys *bytes.Reader
	if pub != nil {
		keys = bytes.NewReader(pub)
	}
	var err error
	// A cheap S2K count keeps tests fast; the real one is checked with gpg.
	if keys != nil {
		err = exportEscrow(&buf, m, "repo-1234", pass, keys, time.Now, 65536)
	} else {
		err = exportEscrow(&buf, m, "repo-1234", pass, nil, time.Now, 65536)
	}
	if err != nil {
		t.Fatalf("ExportEscrow: %v", err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("-----BEGIN PGP MESSAGE-----")) {
		t.Fatalf("escrow is not an armored message: %.60q", buf.String())
	}
	return buf.Bytes()
}

func TestEscrowInProcess(t *testing.T) {
	m := testMaster(4)
	alice := newIdentity(t, "Alice", nil)
	carol := newIdentity(t, "Carol", nil)
	cases := []struct {
		name    string
		pass    []byte
		pub     []byte
		c       Credentials
		wantErr error
	}{
		{"passphrase", []byte("esc"), nil, Credentials{Passphrase: []byte("esc")}, nil},
		{"passphrase wrong", []byte("esc"), nil, Credentials{Passphrase: []byte("nope")}, ErrWrongPassphrase},
		{"recipient", nil, alice.public, Credentials{Identity: alice.secret}, nil},
		{"recipient wrong key", nil, alice.public, Credentials{Identity: carol.secret}, ErrNoMatchingKey},
		{"both by passphrase", []byte("esc"), alice.public, Credentials{Passphrase: []byte("esc")}, nil},
		{"both by key", []byte("esc"), alice.public, Credentials{Identity: alice.secret}, nil},
		{"both, wrong pass then key", []byte("esc"), alice.public, Credentials{Passphrase: []byte("x"), Identity: alice.secret}, nil},
		{"no credentials", []byte("esc"), nil, Credentials{}, ErrNoCredentials},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := escrow(t, m, c.pass, c.pub)
			got, repo, err := LoadEscrow(bytes.NewReader(msg), c.c)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil || got != m || repo != "repo-1234" {
				t.Fatalf("LoadEscrow: err %v, master ok %v, repo %q", err, got == m, repo)
			}
		})
	}
	// Input that is no OpenPGP message is corrupt, not a wrong
	// passphrase: no passphrase would open it.
	full := escrow(t, m, []byte("esc"), nil)
	for name, in := range map[string][]byte{
		"garbage":   []byte("garbage\n"),
		"truncated": full[:300],
		"not armor": []byte("-----BEGIN PGP MESSAGE-----\n\nzzzz\n-----END PGP MESSAGE-----\n"),
	} {
		if _, _, err := LoadEscrow(bytes.NewReader(in), Credentials{Passphrase: []byte("esc")}); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("%s: err = %v, want ErrCorrupt only", name, err)
		}
	}
	if err := ExportEscrow(&bytes.Buffer{}, m, "r", nil, nil); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("export without passphrase or keys: err = %v", err)
	}
}

// TestEscrowOpenedByGnuPG checks the escrow with the real gpg binary
// (GnuPG 2.2 here, which knows neither Argon2 nor AEAD packets): by
// passphrase, by a key gpg generated itself, and by a key made with
// go-crypto and imported into gpg.
func TestEscrowOpenedByGnuPG(t *testing.T) {
	m := testMaster(5)
	g := newGnuPG(t)
	wantBody := encodeBody(m, "repo-1234")

	t.Run("passphrase", func(t *testing.T) {
		var buf bytes.Buffer
		if err := ExportEscrow(&buf, m, "repo-1234", []byte("escrow pass"), nil); err != nil {
			t.Fatal(err)
		}
		msg := buf.Bytes()
		out, _ := g.run(msg, false, "--pinentry-mode", "loopback", "--passphrase", "escrow pass", "--decrypt")
		if !bytes.Equal(out, wantBody) {
			t.Fatalf("gpg decrypted %q, want %q", out, wantBody)
		}
		if _, err := g.run(msg, true, "--pinentry-mode", "loopback", "--passphrase", "wrong", "--decrypt"); err == nil {
			t.Fatal("gpg decrypted the escrow with a wrong passphrase")
		}
	})

	t.Run("gpg key", func(t *testing.T) {
		id := g.genKey("Escrow Officer <escrow@example.com>", "")
		msg := escrow(t, m, []byte("escrow pass"), id.public)
		out, _ := g.run(msg, false, "--decrypt")
		if !bytes.Equal(out, wantBody) {
			t.Fatalf("gpg decrypted %q, want %q", out, wantBody)
		}
		// The same gpg secret key, exported, opens it in-process too.
		got, _, err := LoadEscrow(bytes.NewReader(msg), Credentials{Identity: id.secret})
		if err != nil || got != m {
			t.Fatalf("LoadEscrow with gpg-exported key: %v", err)
		}
	})

	t.Run("passphrase and key, opened by passphrase", func(t *testing.T) {
		id := newIdentity(t, "Officer", nil) // not in gpg's keyring
		msg := escrow(t, m, []byte("both"), id.public)
		out, _ := g.run(msg, false, "--pinentry-mode", "loopback", "--passphrase", "both", "--decrypt")
		if !bytes.Equal(out, wantBody) {
			t.Fatalf("gpg decrypted %q, want %q", out, wantBody)
		}
	})

	t.Run("go-crypto key imported into gpg", func(t *testing.T) {
		id := newIdentity(t, "Imported", nil)
		g.run(id.secret, false, "--import")
		msg := escrow(t, m, nil, id.public)
		out, _ := g.run(msg, false, "--decrypt")
		if !bytes.Equal(out, wantBody) {
			t.Fatalf("gpg decrypted %q, want %q", out, wantBody)
		}
	})
}

// TestRingWithGnuPGKeys unlocks recipients entries with secret keys made
// by the real gpg (plain and passphrase-protected), and checks that gpg
// itself can open such an entry file.
func TestRingWithGnuPGKeys(t *testing.T) {
	g := newGnuPG(t)
	plain := g.genKey("Plain <plain@example.com>", "")
	protected := g.genKey("Protected <protected@example.com>", "idpass")
	// gpg signs its keys at the real time, so the ring's clock must not be
	// the fixed test time: keys "from the future" have no valid self signature.
	dir := filepath.Join(t.TempDir(), "keys")
	r, err := OpenRingOptions(dir, Options{Argon2: cheap, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	m := testMaster(6)
	e, err := r.AddRecipients(m, bytes.NewReader(append(bytes.Clone(plain.public), protected.public...)), "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(e.Recipients, ",") != plain.fpr+","+protected.fpr {
		t.Errorf("recipients %v, want %s and %s", e.Recipients, plain.fpr, protected.fpr)
	}
	for _, c := range []Credentials{
		{Identity: plain.secret},
		{Identity: protected.secret, IdentityPassphrase: []byte("idpass")},
	} {
		got, _, err := r.Unlock(c)
		if err != nil || got != m {
			t.Errorf("unlock with gpg key: err %v", err)
		}
	}
	if _, _, err := r.Unlock(Credentials{Identity: protected.secret, IdentityPassphrase: []byte("bad")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong identity passphrase: err = %v", err)
	}
	msg, err := os.ReadFile(filepath.Join(dir, e.ID+".asc"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := g.run(msg, false, "--decrypt")
	if got, _, err := parseBody(out); err != nil || got != m {
		t.Errorf("gpg-decrypted entry does not hold the master key: %v", err)
	}
}
