package layers_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/strata-backup/strata/layers"
)

func TestDiffFS(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	mk := func(parent layers.Ino, name string, data string) layers.Ino {
		t.Helper()
		a, err := st.Create(ctx, parent, name, 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteAt(ctx, a.Ino, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	d, _ := st.Mkdir(ctx, layers.RootIno, "dir", 0o755, 0, 0)
	mk(d.Ino, "x", "xx")
	mk(d.Ino, "y", "yyy")
	mk(layers.RootIno, "same", "unchanged")
	mod := mk(layers.RootIno, "mod", "before")
	attr := mk(layers.RootIno, "attr", "a")
	mk(layers.RootIno, "type", "file")
	mk(layers.RootIno, "old", "renamed")
	link := func(name, target string) {
		t.Helper()
		if _, err := st.Symlink(ctx, layers.RootIno, name, target, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	link("ln", "a")
	link("lngone", "gone/there")
	r1, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, mod, []byte("after!"), 0); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o600)
	if _, err := st.SetAttr(ctx, attr, layers.SetAttr{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "y"} {
		if err := st.Unlink(ctx, d.Ino, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Rmdir(ctx, layers.RootIno, "dir"); err != nil {
		t.Fatal(err)
	}
	if err := st.Unlink(ctx, layers.RootIno, "type"); err != nil {
		t.Fatal(err)
	}
	td, _ := st.Mkdir(ctx, layers.RootIno, "type", 0o755, 0, 0)
	mk(td.Ino, "inner", "i")
	if err := st.Rename(ctx, layers.RootIno, "old", layers.RootIno, "new", 0); err != nil {
		t.Fatal(err)
	}
	mk(layers.RootIno, "added", "12345")
	for _, n := range []string{"ln", "lngone"} {
		if err := st.Unlink(ctx, layers.RootIno, n); err != nil {
			t.Fatal(err)
		}
	}
	link("ln", "bcd") // retargeted
	link("lnnew", "x")
	r2, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []layers.DiffEntry
	if err := e.repo.Diff(ctx, "v", r1.ID, r2.ID, func(de layers.DiffEntry) error { got = append(got, de); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []layers.DiffEntry{
		{Path: "/added", Change: '+', NewSize: 5},
		{Path: "/attr", Change: 'A', OldSize: 1, NewSize: 1},
		{Path: "/dir", Change: '-'},
		{Path: "/dir/x", Change: '-', OldSize: 2},
		{Path: "/dir/y", Change: '-', OldSize: 3},
		{Path: "/ln", Change: 'M', OldSize: 1, NewSize: 3, OldTarget: "a", NewTarget: "bcd"},
		{Path: "/lngone", Change: '-', OldSize: 10, OldTarget: "gone/there"},
		{Path: "/lnnew", Change: '+', NewSize: 1, NewTarget: "x"},
		{Path: "/mod", Change: 'M', OldSize: 6, NewSize: 6},
		{Path: "/new", Change: '+', NewSize: 7},
		{Path: "/old", Change: '-', OldSize: 7},
		{Path: "/type", Change: 'T', OldSize: 4},
		{Path: "/type/inner", Change: '+', NewSize: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff:\n got %s\nwant %s", fmtDiff(got), fmtDiff(want))
	}
	// No changes: no entries.
	got = nil
	if err := e.repo.Diff(ctx, "v", r2.ID, r2.ID, func(de layers.DiffEntry) error { got = append(got, de); return nil }); err != nil || len(got) != 0 {
		t.Fatalf("diff of a revision with itself: %v %v", fmtDiff(got), err)
	}
}

func fmtDiff(es []layers.DiffEntry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("\n  %c %s %d->%d %q->%q", e.Change, e.Path, e.OldSize, e.NewSize, e.OldTarget, e.NewTarget)
	}
	return s
}

func TestDiffBlock(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	const bs = 64 << 10
	d := newDisk(t, e, "vm", 64*bs, bs)
	fill := func(off, n int64, b byte) {
		p := make([]byte, n)
		for i := range p {
			p[i] = b
		}
		if _, err := d.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
	}
	fill(0, 10*bs, 1)
	r1, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fill(2*bs+100, 10, 2)                         // block 2
	fill(3*bs, 2*bs, 3)                           // blocks 3-4
	fill(20*bs, 1, 4)                             // block 20, was a hole
	if err := d.Zero(ctx, 8*bs, bs); err != nil { // block 8 becomes a hole
		t.Fatal(err)
	}
	fill(9*bs, bs, 1) // same content as before: no change
	r2, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]int64
	err = e.repo.Diff(ctx, "vm", r1.ID, r2.ID, func(de layers.DiffEntry) error {
		if de.Path != "disk.img" || de.Change != 'M' {
			t.Errorf("entry %+v", de)
		}
		got = append(got, [2]int64{de.Off / bs, de.Len / bs})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{2, 3}, {8, 1}, {20, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changed block runs %v, want %v", got, want)
	}
}
