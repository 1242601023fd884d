package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNonUTF8Names: names that are not UTF-8 (legacy Latin-1) and names
// with control characters, through diff and restore.
// Steps: commit a tree, add such files, commit again; diff as text and
// --json; restore one of them by :PATH.
// Pass: text diff escapes the bytes and never prints a control character
// (QA saw ESC sequences reach the terminal, and \xe9 and \xff\xfe print
// alike as U+FFFD); --json carries the exact bytes in path_b64; restore
// finds the file by its raw name (QA: "no such path in the revision").
func TestNonUTF8Names(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	if err := os.WriteFile(filepath.Join(stage, "plain"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.must("commit", "home", "--tag", "one")
	names := []string{"latin1_\xe9t\xe9", "bad_\xff\xfe", "ctrl_\x01\x1b[31m"}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(stage, n), []byte(strings.Repeat("y", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.must("commit", "home", "--tag", "two")
	r.must("umount", stage)

	out := r.must("diff", "home@one", "home@two")
	for _, want := range []string{`+ /latin1_\xe9t\xe9 `, `+ /bad_\xff\xfe `, `+ /ctrl_\x01\x1b[31m `} {
		if !strings.Contains(out, want) {
			t.Errorf("diff does not show %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x01\x1b\ufffd") {
		t.Errorf("diff printed a control character or U+FFFD:\n%q", out)
	}
	var res struct {
		Entries []struct {
			Path    string `json:"path"`
			PathRaw []byte `json:"path_b64"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.must("--json", "diff", "home@one", "home@two")), &res); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range res.Entries {
		p := e.Path
		if e.PathRaw != nil {
			p = string(e.PathRaw)
		}
		got[p] = true
	}
	for _, n := range names {
		if !got["/"+n] {
			t.Errorf("diff --json lost the bytes of %q: %v", n, res.Entries)
		}
	}

	dest := r.mkdir("out")
	r.must("restore", "home@two:"+names[0], dest)
	if b, err := os.ReadFile(filepath.Join(dest, names[0])); err != nil || string(b) != "y" {
		t.Errorf("restore of a Latin-1 name by :PATH: %q, %v", b, err)
	}
}
