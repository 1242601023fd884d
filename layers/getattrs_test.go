package layers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// TestGetAttrsMatchesGetAttr checks the batch read against one GetAttr per
// inode, on staging and on revisions, over records spread across sealed
// layers, badger tables and pending writes: changed, removed, hard-linked,
// open with unflushed writes, never existing, asked for twice.
func TestGetAttrsMatchesGetAttr(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	st := e.staging(t, "v")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0)
	must(err)
	var inos []layers.Ino
	create := func(name string) {
		a, err := st.Create(ctx, d.Ino, name, 0o644, 1, 2, 0)
		must(err)
		inos = append(inos, a.Ino)
	}
	for i := range 200 {
		create(fmt.Sprintf("f%03d", i))
		if i%40 == 0 {
			// Directories between files, as rsync makes them, so the
			// entries' inode numbers are not all adjacent.
			sub, err := st.Mkdir(ctx, d.Ino, fmt.Sprintf("sub%03d", i), 0o700, 0, 0)
			must(err)
			inos = append(inos, sub.Ino)
		}
	}
	rev1, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	must(err)
	e.reopen(t) // the first layer's records into badger tables
	st = e.staging(t, "v")

	chmod := func(every int, mode uint32) {
		for i := 0; i < 200; i += every {
			name := fmt.Sprintf("f%03d", i)
			a, err := st.Tree().Lookup(ctx, d.Ino, name)
			if errors.Is(err, layers.ErrNotFound) {
				continue
			}
			must(err)
			_, err = st.SetAttr(ctx, a.Ino, layers.SetAttr{Mode: &mode})
			must(err)
		}
	}
	unlink := func(every, from int) {
		for i := from; i < 200; i += every {
			err := st.Unlink(ctx, d.Ino, fmt.Sprintf("f%03d", i))
			if !errors.Is(err, layers.ErrNotFound) {
				must(err)
			}
		}
	}
	chmod(3, 0o600)
	unlink(5, 1)
	for i := range 50 {
		create(fmt.Sprintf("g%03d", i))
	}
	_, err = st.Link(ctx, inos[0], d.Ino, "hardlink")
	must(err)
	rev2, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	must(err)

	chmod(7, 0o640)
	unlink(11, 2)
	for i := range 20 {
		create(fmt.Sprintf("h%03d", i))
	}
	// Unflushed writes: the open file's size lies over its record.
	for _, name := range []string{"f004", "h019"} {
		a, err := st.Tree().Lookup(ctx, d.Ino, name)
		must(err)
		_, err = st.WriteAt(ctx, a.Ino, make([]byte, 5000), 0)
		must(err)
	}

	t1, err := e.repo.Snapshot(ctx, "v", rev1.ID)
	must(err)
	t2, err := e.repo.Snapshot(ctx, "v", rev2.ID)
	must(err)

	ask := append([]layers.Ino{}, inos...)
	ask = append(ask, d.Ino, layers.RootIno, inos[5], inos[0], 1<<40)
	rand.New(rand.NewSource(1)).Shuffle(len(ask), func(i, j int) { ask[i], ask[j] = ask[j], ask[i] })

	for _, tc := range []struct {
		name string
		tree *layers.Tree
	}{
		{"revision 1", t1},
		{"revision 2", t2},
		{"staging", st.Tree()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]*layers.Attr, len(ask))
			err := tc.tree.GetAttrs(ctx, ask, func(i int, a layers.Attr) {
				if got[i] != nil {
					t.Errorf("inode %d reported twice", ask[i])
				}
				got[i] = &a
			})
			must(err)
			found := 0
			for i, ino := range ask {
				want, err := tc.tree.GetAttr(ctx, ino)
				switch {
				case errors.Is(err, layers.ErrNotFound):
					if got[i] != nil {
						t.Errorf("inode %d: GetAttrs found %+v, GetAttr: not found", ino, *got[i])
					}
				case err != nil:
					t.Fatal(err)
				case got[i] == nil:
					t.Errorf("inode %d: GetAttrs missed it, GetAttr: %+v", ino, want)
				case *got[i] != want:
					t.Errorf("inode %d: GetAttrs %+v, GetAttr %+v", ino, *got[i], want)
				default:
					found++
				}
			}
			// Each view has removed inodes and live ones.
			if found == 0 || found == len(ask) {
				t.Errorf("%d of %d inodes found: the case does not exercise both", found, len(ask))
			}
		})
	}
}
