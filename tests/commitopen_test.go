package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCommitWarnsOfOpenFiles: a commit while files in staging are open
// for writing (a copy still running) warns, naming them, and still
// commits.
// Steps: mount staging, write a file "old"; from the test process create
// dir/.partial.XyZ and write to it, and open "old" for appending, keeping
// both open; commit (text, then --json); close both, keeping "old" open
// read-only; commit until the kernel has released the writable handles,
// then commit once more.
// Pass: the commits with the files open exit 0; the text one warns on
// stderr that 2 files were open for writing, naming both paths under the
// mountpoint and saying a copy may still be running; --json has
// open_for_writing 2 and the warning. Once they are closed, a commit
// exits 0 without a warning (a read-only handle does not count) and
// --json has open_for_writing 0.
func TestCommitWarnsOfOpenFiles(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	old := filepath.Join(stage, "old")
	if err := os.WriteFile(old, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(stage, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(stage, "dir", ".partial.XyZ")
	created, err := os.OpenFile(partial, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer created.Close()
	if _, err := created.Write([]byte("half of it")); err != nil {
		t.Fatal(err)
	}
	appended, err := os.OpenFile(old, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer appended.Close()

	res := r.run("commit", "home", "-m", "mid-copy")
	if res.code != 0 {
		t.Fatalf("commit with files open for writing: exit %d, stderr %q; want 0 (scripts depend on it)", res.code, res.stderr)
	}
	for _, want := range []string{"strata: warning: 2 files in the staging of home were open for writing", partial, old, "a copy into it may still be running"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("commit with 2 files open for writing: stderr %q; want it to say %q", res.stderr, want)
		}
	}
	type commitDoc struct {
		OpenForWriting int      `json:"open_for_writing"`
		Warnings       []string `json:"warnings"`
	}
	var doc commitDoc
	if err := json.Unmarshal([]byte(r.must("--json", "commit", "home")), &doc); err != nil {
		t.Fatalf("commit --json: %v", err)
	}
	if doc.OpenForWriting != 2 || len(doc.Warnings) != 1 || !strings.Contains(doc.Warnings[0], partial) {
		t.Errorf("commit --json with 2 files open for writing: open_for_writing %d, warnings %q; want 2 and a warning naming %s", doc.OpenForWriting, doc.Warnings, partial)
	}

	reader, err := os.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	created.Close()
	appended.Close()
	// The kernel sends RELEASE after close(2) returns, in the
	// background: wait for the server to see the handles go.
	for deadline := time.Now().Add(10 * time.Second); ; {
		doc = commitDoc{}
		if err := json.Unmarshal([]byte(r.must("--json", "commit", "home")), &doc); err != nil {
			t.Fatalf("commit --json: %v", err)
		}
		if doc.OpenForWriting == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if doc.OpenForWriting != 0 || len(doc.Warnings) != 0 {
		t.Errorf("commit --json after the files were closed: open_for_writing %d, warnings %q; want 0 and none", doc.OpenForWriting, doc.Warnings)
	}
	if res := r.run("commit", "home"); res.code != 0 || strings.Contains(res.stderr, "warning") {
		t.Errorf("commit after the files were closed (one still open read-only): exit %d, stderr %q; want exit 0 and no warning", res.code, res.stderr)
	}
}
