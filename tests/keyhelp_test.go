package tests

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// gpgHome is a throwaway GNUPGHOME for the real gpg, to make the OpenPGP
// keys users would give strata.
type gpgHome struct {
	t    testing.TB
	home string
	out  string // where key files are written
}

func newGPG(t testing.TB) *gpgHome {
	t.Helper()
	need(t, "gpg", "gpgconf")
	// gpg-agent's socket path must stay short: not under t.TempDir.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	// Cheap secret-key protection: gpg-agent calibrates it to ~100 ms
	// of hashing per operation otherwise.
	if err := os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("s2k-count 65536\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, home: home, out: t.TempDir()}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		cmd.Run()
		os.RemoveAll(home)
	})
	return g
}

func (g *gpgHome) gpg(args ...string) []byte {
	g.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--quiet"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// key makes a key (algo and usage as gpg --quick-gen-key takes them,
// pass "" for none) and returns the paths of its armored public and
// secret key files.
func (g *gpgHome) key(uid, algo, usage, pass string) (pub, sec string) {
	g.t.Helper()
	g.gpg("--pinentry-mode", "loopback", "--passphrase", pass, "--quick-gen-key", uid, algo, usage, "never")
	pub = filepath.Join(g.out, uid+"-pub.asc")
	sec = filepath.Join(g.out, uid+"-sec.asc")
	if err := os.WriteFile(pub, g.gpg("--armor", "--export", uid), 0o600); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(sec, g.gpg("--pinentry-mode", "loopback", "--passphrase", pass, "--armor", "--export-secret-keys", uid), 0o600); err != nil {
		g.t.Fatal(err)
	}
	return pub, sec
}

// keyEntry is what 'strata --json key list' prints per entry.
type keyEntry struct {
	ID         string   `json:"id"`
	Kind       string   `json:"kind"`
	Label      string   `json:"label"`
	Recipients []string `json:"recipients"`
}

// keyList returns the repository's key entries.
func (r *repo) keyList() []keyEntry {
	r.t.Helper()
	var out []keyEntry
	if err := json.Unmarshal([]byte(r.must("--json", "key", "list")), &out); err != nil {
		r.t.Fatalf("key list --json: %v", err)
	}
	return out
}

// keysSnapshot reads every file in REPO/keys; nil if the directory is
// missing.
func (r *repo) keysSnapshot() map[string]string {
	r.t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.dir, "keys"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	snap := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(r.dir, "keys", e.Name()))
		if err != nil {
			r.t.Fatal(err)
		}
		snap[e.Name()] = string(b)
	}
	return snap
}

// sameKeys fails the test if REPO/keys differs from before (a missing
// directory and an empty one count as the same: both hold no entry).
func (r *repo) sameKeys(what string, before map[string]string) {
	r.t.Helper()
	after := r.keysSnapshot()
	if len(before) == 0 && len(after) == 0 {
		return
	}
	if !maps.Equal(before, after) {
		r.t.Errorf("%s changed REPO/keys: before %d files %v, after %d files %v", what, len(before), slices.Sorted(maps.Keys(before)), len(after), slices.Sorted(maps.Keys(after)))
	}
}

// copyEntry duplicates key entry id under newID, as two entries with one
// passphrase look (what 'key add' of the same passphrase made before it
// was refused).
func (r *repo) copyEntry(id, newID string) {
	r.t.Helper()
	dir := filepath.Join(r.dir, "keys")
	asc, err := os.ReadFile(filepath.Join(dir, id+".asc"))
	if err != nil {
		r.t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(dir, id+".json"))
	if err != nil {
		r.t.Fatal(err)
	}
	meta = bytes.Replace(meta, []byte(`"`+id+`"`), []byte(`"`+newID+`"`), 1)
	if err := os.WriteFile(filepath.Join(dir, newID+".asc"), asc, 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, newID+".json"), meta, 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// wantFail checks that res failed with code and a stderr holding every one
// of msgs.
func wantFail(t testing.TB, what string, res result, code int, msgs ...string) {
	t.Helper()
	ok := res.code == code
	for _, m := range msgs {
		ok = ok && strings.Contains(res.stderr, m)
	}
	if !ok {
		t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", what, res.code, res.stderr, code, msgs)
	}
}
