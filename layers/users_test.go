package layers_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store/chunk"
)

// TestChunkUsers: a damaged chunk is named by the file that holds it and
// the revisions (and staging) that see that version of the file.
func TestChunkUsers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "home")
	a, err := st.Mkdir(ctx, layers.RootIno, "a", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Mkdir(ctx, a.Ino, "b", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := st.Create(ctx, b.Ino, "c.txt", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	old, cur := bytes.Repeat([]byte("old "), 2000), bytes.Repeat([]byte("new "), 3000)
	write := func(p []byte) {
		t.Helper()
		zero := int64(0)
		if _, err := st.SetAttr(ctx, f.Ino, layers.SetAttr{Size: &zero}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteAt(ctx, f.Ino, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	write(old)
	one, err := e.repo.Commit(ctx, "home", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write(cur)
	two, err := e.repo.Commit(ctx, "home", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]chunk.ID{}
	e.cs.Walk(ctx, chunk.KindData, func(id chunk.ID, data []byte) error {
		switch {
		case bytes.Equal(data, old):
			ids["old"] = id
		case bytes.Equal(data, cur):
			ids["new"] = id
		}
		return nil
	})
	tests := []struct {
		which   string
		revs    []string
		staging bool
	}{
		{"old", []string{one.ID}, false},
		{"new", []string{two.ID}, true},
	}
	for _, tt := range tests {
		id, ok := ids[tt.which]
		if !ok {
			t.Fatalf("no stored chunk holds the %s content", tt.which)
		}
		uses, err := e.repo.ChunkUsers(ctx, []chunk.ID{id})
		if err != nil {
			t.Fatal(err)
		}
		if len(uses) != 1 || uses[0].Volume != "home" || uses[0].Where != "a/b/c.txt" ||
			!slices.Equal(uses[0].Revisions, tt.revs) || uses[0].Staging != tt.staging {
			t.Errorf("%s chunk: %+v; want home a/b/c.txt in %v, staging %v", tt.which, uses, tt.revs, tt.staging)
		}
	}
}

// TestTreePath: Path names an inode through the directories inodes
// record, on the staging head as changes land (pending writes included)
// and after renames; an inode with no link where it was made or renamed
// to has none.
func TestTreePath(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "home")
	mk := func(parent layers.Ino, name string, dir bool) layers.Ino {
		t.Helper()
		var a layers.Attr
		var err error
		if dir {
			a, err = st.Mkdir(ctx, parent, name, 0o755, 0, 0)
		} else {
			a, err = st.Create(ctx, parent, name, 0o644, 0, 0, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	a := mk(layers.RootIno, "a", true)
	b := mk(a, "b", true)
	f := mk(b, ".f.XyZ12", false)
	moved := mk(b, "tmp", false)
	if err := st.Rename(ctx, b, "tmp", a, "final", 0); err != nil {
		t.Fatal(err)
	}
	linked := mk(b, "orig", false)
	if _, err := st.Link(ctx, linked, a, "other"); err != nil {
		t.Fatal(err)
	}
	if err := st.Unlink(ctx, b, "orig"); err != nil {
		t.Fatal(err)
	}
	gone := mk(layers.RootIno, "gone", false)
	if err := st.Unlink(ctx, layers.RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ino  layers.Ino
		want string // "" with notFound
		// notFound: Path fails with ErrNotFound.
		notFound bool
	}{
		{"root", layers.RootIno, "", false},
		{"directory", b, "a/b", false},
		{"file", f, "a/b/.f.XyZ12", false},
		{"renamed file", moved, "a/final", false},
		{"only another hard link left", linked, "", true},
		{"unlinked", gone, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.Tree().Path(ctx, tc.ino)
			if tc.notFound {
				if !errors.Is(err, layers.ErrNotFound) {
					t.Errorf("Path(%d) = %q, %v; want ErrNotFound", tc.ino, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Path(%d) = %q, %v; want %q", tc.ino, got, err, tc.want)
			}
		})
	}
}
