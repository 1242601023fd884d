package layers_test

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
)

// TestLoadFileMaps: the extent maps LoadFileMaps caches for a directory
// batch are those of the revision read, whichever layer wrote them, so
// reads through them return each revision's bytes; directories and empty
// files are skipped, and staging has no cache to fill.
// Steps: files a, b, c (holes only), e (empty) and directory d; commit;
// rewrite b, add f; commit; for both revisions GetAttrs of the root's
// entries, LoadFileMaps, then read every file.
func TestLoadFileMaps(t *testing.T) {
	ctx := context.Background()
	r, st := repoOver(t, memstore.New())
	rng := rand.New(rand.NewSource(3))
	random := func(n int) []byte { p := make([]byte, n); rng.Read(p); return p }
	create := func(name string) layers.Ino {
		t.Helper()
		a, err := st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	write := func(ino layers.Ino, p []byte, off int64) {
		t.Helper()
		if _, err := st.WriteAt(ctx, ino, p, off); err != nil {
			t.Fatal(err)
		}
	}
	inos := map[string]layers.Ino{"a": create("a"), "b": create("b"), "c": create("c"), "e": create("e")}
	if _, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	first := map[string][]byte{"a": random(70_000), "b": random(30_000), "c": make([]byte, 50_000), "e": nil}
	write(inos["a"], first["a"], 0)
	write(inos["b"], first["b"], 0)
	size := int64(50_000)
	if _, err := st.SetAttr(ctx, inos["c"], layers.SetAttr{Size: &size}); err != nil {
		t.Fatal(err)
	}
	rev1, err := r.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second := map[string][]byte{"a": first["a"], "b": random(40_000), "c": first["c"], "e": nil, "f": random(10_000)}
	write(inos["b"], second["b"], 0)
	inos["f"] = create("f")
	write(inos["f"], second["f"], 0)
	rev2, err := r.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		rev  string
		want map[string][]byte
		maps int // regular files with data or holes: not e, not d
	}{
		{rev1.ID, first, 3},
		{rev2.ID, second, 4},
	} {
		tr, err := r.Snapshot(ctx, "v", c.rev)
		if err != nil {
			t.Fatal(err)
		}
		var list []layers.Ino
		if err := tr.ReadDir(ctx, layers.RootIno, "", func(d layers.Dirent) bool { list = append(list, d.Ino); return true }); err != nil {
			t.Fatal(err)
		}
		var attrs []layers.Attr
		if err := tr.GetAttrs(ctx, list, func(_ int, a layers.Attr) { attrs = append(attrs, a) }); err != nil {
			t.Fatal(err)
		}
		if err := tr.LoadFileMaps(ctx, attrs); err != nil {
			t.Fatalf("revision %s: LoadFileMaps: %v", c.rev, err)
		}
		if n := layers.CachedFileMaps(tr); n != c.maps {
			t.Errorf("revision %s: %d file maps cached, want %d", c.rev, n, c.maps)
		}
		for name, want := range c.want {
			p := bytes.Repeat([]byte{0xaa}, len(want)+100)
			n, err := tr.ReadAt(ctx, inos[name], p, 0)
			if err != nil {
				t.Fatalf("revision %s: read %s: %v", c.rev, name, err)
			}
			if !bytes.Equal(p[:n], want) {
				t.Errorf("revision %s: %s read %d bytes, differing from the %d written", c.rev, name, n, len(want))
			}
		}
	}
	if err := st.Tree().LoadFileMaps(ctx, []layers.Attr{{Ino: inos["a"], Mode: 0o100644, Size: 70_000}}); err != nil {
		t.Errorf("staging: %v", err)
	}
}
