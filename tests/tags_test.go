package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTagsChecked: commit refuses tags that a revision spec could not
// name, that would change what a spec means, or that the --all mount
// could not list, and commits nothing then. QA committed "a/b" (after
// which listing VOLUME/tags/ in the --all mount failed with EIO and hid
// the tags after it), "latest", "3", "a~1", "a:b" and "protected".
// Steps: a file tree with a file in staging; commit with each bad tag
// (alone, or after a good one), and with a schedule whose tag is bad;
// then commit with good tags, mount --all and list VOLUME/tags/.
// Pass: each bad commit exits 2 naming the tag and why, with a hint, and
// list shows no revision; the good commit carries its tags and the
// --all mount lists them.
func TestTagsChecked(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	if err := os.WriteFile(filepath.Join(stage, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tag  string // the --tag value
		want string // in stderr
	}{
		{"a/b", `tag "a/b" contains '/'`},
		{"daily,a/b", `tag "a/b" contains '/'`},
		{"latest", `tag "latest" is a revision spec keyword`},
		{"Last", `tag "Last" is a revision spec keyword`},
		{"3", `tag "3" is all digits`},
		{"a~1", `tag "a~1" contains '~'`},
		{"a:b", `tag "a:b" contains ':'`},
		{"a@b", `tag "a@b" contains '@'`},
		{"protected", `tag "protected" is what 'strata list' shows`},
		{"a b", `tag "a b" contains whitespace`},
		{"a\tb", `contains whitespace`},
		{"a\x01b", `control character`},
		{"..", `tag ".." cannot be a file name`},
		{"3d", `tag "3d" reads as an age`},
		{"2026-11-20", `tag "2026-11-20" reads as a date`},
		{"", `--tag "" holds an empty tag`},
		{"daily,", `--tag "daily," holds an empty tag`},
	} {
		t.Run(tt.tag, func(t *testing.T) {
			res := r.run("commit", "home", "--tag", tt.tag)
			if res.code != 2 || !strings.Contains(res.stderr, tt.want) || !strings.Contains(res.stderr, "hint: ") {
				t.Errorf("commit --tag %q: exit %d, stderr %q; want exit 2 with %q and a hint", tt.tag, res.code, res.stderr, tt.want)
			}
		})
	}
	res := r.run("commit", "home", "--schedule", "3=1d:7")
	if res.code != 2 || !strings.Contains(res.stderr, `tag "3" is all digits`) {
		t.Errorf("commit --schedule 3=1d:7: exit %d, stderr %q; want the schedule's tag refused", res.code, res.stderr)
	}
	if out := r.must("list", "home"); !strings.Contains(out, "0 revisions,") {
		t.Fatalf("after the refused commits list shows revisions:\n%s", out)
	}

	// A tag that is also an id prefix is fine: a tag wins over a prefix.
	r.must("commit", "home", "--tag", "daily, abc", "--tag", "v1.2")
	if out := r.must("list", "home"); !strings.Contains(out, "daily,abc,v1.2") {
		t.Errorf("list after commit --tag 'daily, abc' --tag v1.2:\n%s", out)
	}
	all := r.mkdir("mnt/all")
	r.must("mount", "--all", all)
	ents, err := os.ReadDir(filepath.Join(all, "home", "tags"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"abc", "daily", "v1.2"}; !slices.Equal(names, want) {
		t.Errorf("--all mount home/tags/: %v, want %v", names, want)
	}
	if b, err := os.ReadFile(filepath.Join(all, "home", "tags", "abc", "f")); err != nil || string(b) != "x" {
		t.Errorf("home/tags/abc/f: %q, %v", b, err)
	}
	r.must("umount", all)
	r.must("umount", stage)
}
