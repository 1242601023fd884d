package layers_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

// TestWithRealStore runs staging, commit, block disks and reopen over the
// real extent store (encrypted, erasure coded) and its badger index.
func TestWithRealStore(t *testing.T) {
	ctx := context.Background()
	dir, cfg := newStoreDir(t, format.Config{DataShards: 2, ParityShards: 1, SegmentSize: 4 << 20})
	keys := crypt.NewKeys([32]byte{9, 8, 7})
	spool := t.TempDir()
	open := func() (*store.Store, *layers.Repo) {
		s, err := store.Open(ctx, dir, cfg, keys, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: spool})
		if err != nil {
			t.Fatal(err)
		}
		return s, r
	}
	s, r := open()
	if _, err := r.CreateVolume(ctx, "fs", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Staging(ctx, "fs")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	for i, size := range []int{0, 1, 4096, 600 << 10, 5 << 20} {
		a, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, size)
		rng.Read(p)
		if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
			t.Fatal(err)
		}
		if err := st.FlushFile(ctx, a.Ino, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	want := dumpTree(t, st.Tree())
	rev, err := r.Commit(ctx, "fs", layers.CommitOptions{Tags: []string{"first"}})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Added < 5<<20 || rev.Files != 6 {
		t.Errorf("revision: added %d files %d", rev.Added, rev.Files)
	}
	if _, err := r.CreateVolume(ctx, "vm", layers.VolumeSpec{Type: layers.TypeBlock, Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	d, err := r.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 4<<20)
	rng.Read(img[1<<20 : 2<<20])
	if _, err := d.WriteAt(ctx, img, 0); err != nil {
		t.Fatal(err)
	}
	drev, err := r.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := r.StatFS(ctx)
	if err != nil || fs.TotalBytes == 0 {
		t.Errorf("statfs: %+v, %v", fs, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, r = open()
	defer s.Close()
	defer r.Close()
	got, err := r.Resolve(ctx, "fs", "first", rev.Time)
	if err != nil || got.ID != rev.ID {
		t.Fatalf("resolve after reopen: %v %v", got.ID, err)
	}
	tr, err := r.Snapshot(ctx, "fs", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dumpTree(t, tr) != want {
		t.Fatal("revision differs after reopen")
	}
	rd, err := r.RevisionDisk(ctx, "vm", drev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, rd), img) {
		t.Fatal("disk revision differs after reopen")
	}
	ext, err := rd.Extents(ctx, 0, rd.Size())
	if err != nil || len(ext) != 3 || !ext[0].Hole || ext[1].Hole || !ext[2].Hole {
		t.Fatalf("disk extents %+v, %v: want hole, data, hole", ext, err)
	}
}
