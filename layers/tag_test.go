package layers_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// TestCheckTag: tags a revision spec could not name as themselves, or
// that would change what a spec means, or that the --all mount could not
// show, are refused with the reason; ordinary names pass. QA committed
// "a/b" (which made the --all mount's tags/ listing fail with EIO),
// "latest", "3", "a~1", "a:b" and "protected".
func TestCheckTag(t *testing.T) {
	for _, tt := range []struct {
		tag  string
		want string // in the error; "" for a valid tag
	}{
		{"daily", ""},
		{"pre-upgrade", ""},
		{"v1.2", ""},
		{"Ünïcode", ""},
		{"abc", ""},      // also an id prefix: a tag wins over one
		{"deadbeef", ""}, // likewise
		{"3D", ""},       // ages are lower case
		{"x3", ""},
		{"latest-good", ""},
		{strings.Repeat("t", 255), ""},
		{"", "empty"},
		{strings.Repeat("t", 256), "256 bytes"},
		{"a/b", "'/'"},
		{"a~1", "'~'"},
		{"~1", "'~'"},
		{"a@b", "'@'"},
		{"a:b", "':'"},
		{"a,b", "','"},
		{"a b", "whitespace"},
		{"a\tb", "whitespace"},
		{"a\u00a0b", "whitespace"},
		{"a\x00b", "control character"},
		{"a\x1bb", "control character"},
		{"a\xffb", "UTF-8"},
		{".", "file name"},
		{"..", "file name"},
		{"3", "all digits"},
		{"007", "all digits"},
		{"latest", "keyword"},
		{"LAST", "keyword"},
		{"Latest", "keyword"},
		{"protected", "protect"},
		{"PROTECTED", "protect"},
		{"3d", "age"},
		{"1d12h", "age"},
		{"2w", "age"},
		{"2026-11-20", "date"},
		{"0123456789abcdef", "revision id"},
		{"0123456789ABCDEF", "revision id"},
	} {
		t.Run(tt.tag, func(t *testing.T) {
			err := layers.CheckTag(tt.tag)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("CheckTag(%q) = %v, want nil", tt.tag, err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("CheckTag(%q) = nil, want an error mentioning %q", tt.tag, tt.want)
			case !strings.Contains(err.Error(), tt.want) || !errors.Is(err, layers.ErrInvalid):
				t.Fatalf("CheckTag(%q) = %v, want an ErrInvalid mentioning %q", tt.tag, err, tt.want)
			}
		})
	}
}

// TestCommitBadTag: a commit with a bad tag among good ones commits
// nothing; staging stays as it was, for the next commit to take.
func TestCommitBadTag(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	st := e.staging(t, "v")
	if _, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Tags: []string{"daily", "a/b"}})
	var te *layers.TagError
	if !errors.As(err, &te) || te.Tag != "a/b" {
		t.Fatalf("commit with tag a/b: %v, want a TagError naming it", err)
	}
	if revs, err := e.repo.Revisions(ctx, "v"); err != nil || len(revs) != 0 {
		t.Fatalf("after the refused commit: %d revisions, %v; want none", len(revs), err)
	}
	rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Tags: []string{" daily ", "weekly", "daily"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rev.Tags, ","); got != "daily,weekly" {
		t.Errorf("tags %q, want daily,weekly (trimmed, once each)", got)
	}
	if _, err := st.Tree().Lookup(ctx, layers.RootIno, "f"); err != nil {
		t.Errorf("staging after the commits: %v", err)
	}
}
