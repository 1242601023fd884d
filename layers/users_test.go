package layers_test

import (
	"bytes"
	"context"
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
