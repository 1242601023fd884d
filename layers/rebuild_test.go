package layers_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store/chunk"
)

func TestRebuildFromMetaChunks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "fs")
	rng := rand.New(rand.NewSource(4))
	var ids []string
	var dumps []string
	for round := 0; round < 3; round++ {
		for i := 0; i < 4; i++ {
			name := fmt.Sprintf("f%d", rng.Intn(6))
			a, err := st.Tree().Lookup(ctx, layers.RootIno, name)
			if err != nil {
				a, err = st.Create(ctx, layers.RootIno, name, 0o640, 1, 1, 0)
				if err != nil {
					t.Fatal(err)
				}
			}
			p := make([]byte, rng.Intn(700<<10))
			rng.Read(p)
			if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
				t.Fatal(err)
			}
			_ = st.SetXattr(ctx, a.Ino, "user.r", []byte{byte(round)}, 0)
		}
		_ = st.Unlink(ctx, layers.RootIno, fmt.Sprintf("f%d", rng.Intn(6)))
		dumps = append(dumps, dumpTree(t, st.Tree()))
		rev, err := e.repo.Commit(ctx, "fs", layers.CommitOptions{Tags: []string{fmt.Sprint("t", round)}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rev.ID)
	}
	d := newDisk(t, e, "vm", 1<<20, 64<<10)
	img := make([]byte, 1<<20)
	rng.Read(img[100<<10 : 300<<10])
	if _, err := d.WriteAt(ctx, img, 0); err != nil {
		t.Fatal(err)
	}
	drev, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Lose the index: a fresh DB over the same chunks.
	fresh := &env{cs: e.cs, spool: t.TempDir()}
	fresh.open(t)
	if _, err := fresh.repo.RebuildFrom(ctx, e.cs.Walk); err != nil {
		t.Fatal(err)
	}
	vols, err := fresh.repo.Volumes(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "fs" || vols[0].Revisions != 3 || vols[1].Type != layers.TypeBlock {
		t.Fatalf("volumes after rebuild: %+v, %v", vols, err)
	}
	for i, id := range ids {
		tr, err := fresh.repo.Snapshot(ctx, "fs", id)
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpTree(t, tr); got != dumps[i] {
			t.Fatalf("revision %d after rebuild:\n got %s\nwant %s", i, got, dumps[i])
		}
	}
	if rev, err := fresh.repo.Resolve(ctx, "fs", "t1", drev.Time); err != nil || rev.ID != ids[1] {
		t.Fatalf("resolve tag after rebuild: %v %v", rev.ID, err)
	}
	rd, err := fresh.repo.RevisionDisk(ctx, "vm", drev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, rd), img) {
		t.Fatal("disk revision differs after rebuild")
	}
	// Staging restarts at the latest revision and new inodes do not clash.
	st2, err := fresh.repo.Staging(ctx, "fs")
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpTree(t, st2.Tree()); got != dumps[2] {
		t.Fatal("staging after rebuild is not the latest revision")
	}
	if _, err := st2.Create(ctx, layers.RootIno, "new", 0o600, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	// References account for every reference the store holds.
	refs := 0
	if err := e.repo.References(ctx, func(chunk.ID) error { refs++; return nil }); err != nil {
		t.Fatal(err)
	}
	_, dataRefs := e.cs.Refs(chunk.KindData)
	_, metaRefs := e.cs.Refs(chunk.KindMeta)
	if refs != dataRefs+metaRefs {
		t.Fatalf("References reported %d, store holds %d data + %d meta", refs, dataRefs, metaRefs)
	}
}
