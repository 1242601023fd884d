package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestJSONOutput checks the --json contract scripts rely on, through the
// binary: every command that prints a result prints one JSON document
// whose keys are all snake_case (never Go field names), revisions carry
// their tags as a list even when there are none, and durations are
// seconds.
func TestJSONOutput(t *testing.T) {
	need(t, "rsync")
	r := newRepo(t)
	src := r.mkdir("src")
	makeSmallTree(t, src, 5, 3)
	stage := r.mountNewVolume("home")
	sh(t, "rsync", "-a", src+"/", stage+"/")
	r.must("commit", "home", "--tag", "first")
	r.must("umount", stage)

	key := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if !key.MatchString(k) {
					t.Errorf("%s: key %q is not snake_case", path, k)
				}
				walk(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		}
	}
	for _, tc := range []struct {
		args  []string
		check func(t *testing.T, doc any)
	}{
		{args: []string{"commit", "home"}, check: func(t *testing.T, doc any) {
			rev := doc.(map[string]any)
			if _, ok := rev["tags"].([]any); !ok {
				t.Errorf("commit without tags: tags is %v, want []", rev["tags"])
			}
			if d, ok := rev["duration_seconds"].(float64); !ok || d < 0 || d > 600 {
				t.Errorf("commit: duration_seconds is %v, want seconds", rev["duration_seconds"])
			}
		}},
		{args: []string{"list", "home"}, check: func(t *testing.T, doc any) {
			revs := doc.([]any)
			if len(revs) != 2 {
				t.Fatalf("list: %d revisions, want 2", len(revs))
			}
			first := revs[0].(map[string]any)
			if tags, _ := first["tags"].([]any); len(tags) != 1 || tags[0] != "first" {
				t.Errorf("list: tags of the first revision are %v", first["tags"])
			}
			if id, _ := first["id"].(string); len(id) < 8 || first["short_id"] != id[:8] {
				t.Errorf("list: id %v, short_id %v", first["id"], first["short_id"])
			}
		}},
		{args: []string{"volume", "create", "vm", "--block", "16M"}},
		{args: []string{"volume", "list"}, check: func(t *testing.T, doc any) {
			if vols := doc.([]any); len(vols) != 2 || vols[1].(map[string]any)["name"] != "vm" {
				t.Errorf("volume list: %v", vols)
			}
		}},
		{args: []string{"status"}, check: func(t *testing.T, doc any) {
			st := doc.(map[string]any)
			if _, ok := st["store"].(map[string]any)["shard_bytes"].(float64); !ok {
				t.Errorf("status: store.shard_bytes missing: %v", st["store"])
			}
		}},
		{args: []string{"protect", "home@first"}},
		{args: []string{"diff", "home@first", "home@latest"}},
		{args: []string{"prune", "--dry-run", "--keep-last", "1"}},
		{args: []string{"key", "list"}},
		{args: []string{"scrub"}},
		{args: []string{"restore", "home@latest", filepath.Join(r.work, "restored")}},
	} {
		name := strings.Join(tc.args, " ")
		out := r.must(append([]string{"--json"}, tc.args...)...)
		// Long commands print progress as JSON lines before the result.
		dec := json.NewDecoder(strings.NewReader(out))
		var doc any
		for dec.More() {
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("%s --json: %v\n%s", name, err, out)
			}
			walk(name, doc)
		}
		if doc == nil {
			t.Fatalf("%s --json printed nothing", name)
		}
		if tc.check != nil {
			tc.check(t, doc)
		}
	}

	// Errors too: one JSON object per line on stderr, the hint apart.
	res := r.run("--json", "mount", "home@nosuch", r.mkdir("m"))
	var msgs []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
		var m map[string]string
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("--json error output: line %q is not JSON (%v)\n%s", line, err, res.stderr)
		}
		msgs = append(msgs, m)
	}
	if res.code == 0 || len(msgs) < 2 || !strings.Contains(msgs[0]["error"], "no revision of home matches") || msgs[1]["hint"] == "" {
		t.Errorf("--json error: exit %d, %v; want an error object and a hint object", res.code, msgs)
	}
}

// TestUncommittedShown: staging changed since the last commit is shown by
// status (text and --json) and at umount, and no longer after a commit.
// QA: a user from restic could rsync, unmount and never commit, with no
// command saying the backup was in no revision.
func TestUncommittedShown(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	if err := os.WriteFile(filepath.Join(stage, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := r.must("status"); !strings.Contains(out, "staging of home has changes not yet committed") {
		t.Errorf("status with uncommitted changes:\n%s", out)
	}
	if out := r.must("umount", stage); !strings.Contains(out, "in no revision until 'strata commit home'") {
		t.Errorf("umount of staging with uncommitted changes:\n%s", out)
	}
	if out := r.must("--json", "status"); !strings.Contains(out, `"uncommitted_since"`) {
		t.Errorf("status --json with uncommitted changes:\n%s", out)
	}
	r.must("commit", "home")
	if out := r.must("status"); strings.Contains(out, "not yet committed") {
		t.Errorf("status after the commit:\n%s", out)
	}
	r.must("mount", "home", stage)
	if out := r.must("umount", stage); strings.Contains(out, "not yet committed") {
		t.Errorf("umount with nothing uncommitted:\n%s", out)
	}
	// An import of an older backup says it does not become latest.
	if res := r.run("commit", "home", "--time", "2020-01-01"); res.code != 0 || !strings.Contains(res.stderr, "home@latest still names that one") {
		t.Errorf("commit --time before the newest revision: exit %d, stderr %q; want a warning", res.code, res.stderr)
	}
}
