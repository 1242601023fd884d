package key

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// cheap keeps Argon2 fast in tests; production cost is measured by
// BenchmarkUnlockDefaultArgon2.
var cheap = Argon2{Passes: 1, Parallelism: 1, MemoryKiB: 64}

var testTime = time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)

func testRing(t testing.TB) (*Ring, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	r, err := OpenRingOptions(dir, Options{Argon2: cheap, Now: func() time.Time { return testTime }})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func testMaster(seed byte) Master {
	var m Master
	for i := range m {
		m[i] = seed*31 + byte(i)
	}
	return m
}

// testIdentity is an OpenPGP key made in-process (ed25519 + cv25519).
type testIdentity struct {
	public, secret []byte // armored
	fpr            string
}

func newIdentity(t testing.TB, name string, pass []byte) testIdentity {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: func() time.Time { return testTime.Add(-time.Hour) }}
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.com", cfg)
	if err != nil {
		t.Fatalf("new entity: %v", err)
	}
	var pub, sec bytes.Buffer
	w, _ := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _ = armor.Encode(&sec, openpgp.PrivateKeyType, nil)
	if pass != nil {
		if err := e.EncryptPrivateKeys(pass, nil); err != nil {
			t.Fatal(err)
		}
		err = e.SerializePrivateWithoutSigning(w, nil)
	} else {
		err = e.SerializePrivate(w, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return testIdentity{public: pub.Bytes(), secret: sec.Bytes(), fpr: fingerprint(e.PrimaryKey.Fingerprint)}
}

// gnupg is a throwaway GNUPGHOME for the real gpg binary.
type gnupg struct {
	t    testing.TB
	home string
}

func newGnuPG(t testing.TB) *gnupg {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("gpg binary needed for this test: %v", err)
	}
	// gpg-agent's socket path must stay short: use a short temp dir.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	// gpg-agent calibrates key protection to ~100 ms of hashing per
	// operation, which made key generation and export take seconds here.
	for _, f := range []string{"gpg.conf", "gpg-agent.conf"} {
		if err := os.WriteFile(filepath.Join(home, f), []byte("s2k-count 65536\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g := &gnupg{t: t, home: home}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		cmd.Run()
		os.RemoveAll(home)
	})
	return g
}

// run runs gpg with stdin and returns stdout; it fails the test on error
// unless allowFail.
func (g *gnupg) run(stdin []byte, allowFail bool, args ...string) ([]byte, error) {
	g.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--quiet"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && !allowFail {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), err
}

// genKey makes a key with real gpg and returns its armored public and
// secret parts and fingerprint.
func (g *gnupg) genKey(uid string, pass string) testIdentity {
	g.t.Helper()
	g.run(nil, false, "--pinentry-mode", "loopback", "--passphrase", pass,
		"--quick-gen-key", uid, "future-default", "default", "never")
	pub, _ := g.run(nil, false, "--armor", "--export", uid)
	sec, _ := g.run(nil, false, "--pinentry-mode", "loopback", "--passphrase", pass, "--armor", "--export-secret-keys", uid)
	out, _ := g.run(nil, false, "--with-colons", "--fingerprint", uid)
	var fpr string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			fpr = f[9]
			break
		}
	}
	if fpr == "" || !bytes.Contains(pub, []byte("BEGIN PGP PUBLIC KEY")) || !bytes.Contains(sec, []byte("BEGIN PGP PRIVATE KEY")) {
		g.t.Fatalf("gpg key generation for %q gave no usable key (fpr %q)", uid, fpr)
	}
	return testIdentity{public: pub, secret: sec, fpr: fpr}
}
