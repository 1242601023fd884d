package layers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

func TestStagingErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	f, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, d.Ino, "x", 0o644, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"lookup missing", func() error { _, err := st.Tree().Lookup(ctx, layers.RootIno, "nope"); return err }, layers.ErrNotFound},
		{"lookup in file", func() error { _, err := st.Tree().Lookup(ctx, f.Ino, "x"); return err }, layers.ErrNotDir},
		{"create exists", func() error { _, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0); return err }, layers.ErrExists},
		{"create in file", func() error { _, err := st.Create(ctx, f.Ino, "y", 0o644, 0, 0, 0); return err }, layers.ErrNotDir},
		{"create in missing", func() error { _, err := st.Create(ctx, 999, "y", 0o644, 0, 0, 0); return err }, layers.ErrNotFound},
		{"name too long", func() error {
			_, err := st.Create(ctx, layers.RootIno, strings.Repeat("n", 256), 0o644, 0, 0, 0)
			return err
		}, layers.ErrNameTooLong},
		{"name with slash", func() error { _, err := st.Mkdir(ctx, layers.RootIno, "a/b", 0o755, 0, 0); return err }, layers.ErrInvalid},
		{"rmdir not empty", func() error { return st.Rmdir(ctx, layers.RootIno, "d") }, layers.ErrNotEmpty},
		{"rmdir file", func() error { return st.Rmdir(ctx, layers.RootIno, "f") }, layers.ErrNotDir},
		{"unlink dir", func() error { return st.Unlink(ctx, layers.RootIno, "d") }, layers.ErrIsDir},
		{"write dir", func() error { _, err := st.WriteAt(ctx, d.Ino, []byte("x"), 0); return err }, layers.ErrIsDir},
		{"link dir", func() error { _, err := st.Link(ctx, d.Ino, layers.RootIno, "dl"); return err }, layers.ErrIsDir},
		{"rename into itself", func() error { return st.Rename(ctx, layers.RootIno, "d", d.Ino, "sub", 0) }, layers.ErrInvalid},
		{"rename noreplace", func() error { return st.Rename(ctx, layers.RootIno, "f", layers.RootIno, "d", layers.RenameNoReplace) }, layers.ErrExists},
		{"rename file over dir", func() error { return st.Rename(ctx, layers.RootIno, "f", layers.RootIno, "d", 0) }, layers.ErrIsDir},
		{"exchange missing", func() error { return st.Rename(ctx, layers.RootIno, "f", layers.RootIno, "zz", layers.RenameExchange) }, layers.ErrNotFound},
		{"get missing xattr", func() error { _, err := st.Tree().GetXattr(ctx, f.Ino, "user.no"); return err }, layers.ErrNoXattr},
		{"readlink file", func() error { _, err := st.Tree().Readlink(ctx, f.Ino); return err }, layers.ErrInvalid},
		{"readdir file", func() error { return st.Tree().ReadDir(ctx, f.Ino, "", func(layers.Dirent) bool { return true }) }, layers.ErrNotDir},
		{"truncate negative", func() error { s := int64(-1); _, err := st.SetAttr(ctx, f.Ino, layers.SetAttr{Size: &s}); return err }, layers.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSetAttrTimes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	a, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, []byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2001, 2, 3, 4, 5, 6, 789012345, time.UTC)
	at := time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC)
	mode := uint32(0o4711)
	before, _ := st.Tree().GetAttr(ctx, a.Ino)
	got, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Mtime: &mt, Atime: &at, Mode: &mode})
	if err != nil {
		t.Fatal(err)
	}
	check := func(where string, got layers.Attr) {
		t.Helper()
		if !got.Mtime.Equal(mt) || !got.Atime.Equal(at) || got.Mode != syscall.S_IFREG|0o4711 || got.Size != 5 {
			t.Errorf("%s: got mtime %v atime %v mode %o size %d", where, got.Mtime, got.Atime, got.Mode, got.Size)
		}
		if got.Ctime.Before(before.Ctime) {
			t.Errorf("%s: ctime went back: %v < %v", where, got.Ctime, before.Ctime)
		}
	}
	check("setattr result", got)
	a2, _ := st.Tree().GetAttr(ctx, a.Ino)
	check("getattr dirty", a2)
	if err := st.FlushFile(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
	a3, _ := st.Tree().GetAttr(ctx, a.Ino)
	check("getattr flushed", a3)
}

func TestSparseFile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	a, err := st.Create(ctx, layers.RootIno, "sparse", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	const big = 5 << 30 // > 4 GiB
	if _, err := st.WriteAt(ctx, a.Ino, []byte("tail"), big-4); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, []byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	for _, durable := range []bool{false, true} {
		if err := st.FlushFile(ctx, a.Ino, durable); err != nil {
			t.Fatal(err)
		}
		if err := st.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got, _ := st.Tree().GetAttr(ctx, a.Ino)
		if got.Size != big {
			t.Fatalf("size %d, want %d", got.Size, int64(big))
		}
		ext, err := st.Tree().Extents(ctx, a.Ino, 0, big)
		if err != nil {
			t.Fatal(err)
		}
		if len(ext) != 3 || ext[0].Hole || !ext[1].Hole || ext[2].Hole || ext[2].Off+ext[2].Len != big {
			t.Fatalf("extents %+v: want data, hole, data", ext)
		}
		// st_blocks follows Holes: du and cp see the file as sparse.
		if got.Holes != ext[1].Len {
			t.Fatalf("Holes %d, want the hole's %d", got.Holes, ext[1].Len)
		}
		buf := make([]byte, 8)
		if n, err := st.Tree().ReadAt(ctx, a.Ino, buf, big-6); err != nil || n != 6 || string(buf[:6]) != "\x00\x00tail" {
			t.Fatalf("read tail: %d %v %q", n, err, buf)
		}
		// extend with a hole, then write in the middle
		s := int64(big + 1<<20)
		if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Size: &s}); err != nil {
			t.Fatal(err)
		}
		s = big
		if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Size: &s}); err != nil {
			t.Fatal(err)
		}
	}
	if chunks, _ := e.cs.Refs(0); chunks != 0 {
		t.Fatalf("unexpected chunks of kind 0")
	}
	// A revision keeps it.
	rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := e.repo.Snapshot(ctx, "v", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tree.GetAttr(ctx, a.Ino); err != nil || got.Holes < big-1<<20 {
		t.Fatalf("revision: Holes %d, %v; want about the whole 5 GiB", got.Holes, err)
	}
}

func TestReadDirLarge(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	st := e.staging(t, "v")
	n := 100000
	if testing.Short() || raceEnabled {
		n = 20000
	}
	d, err := st.Mkdir(ctx, layers.RootIno, "big", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := st.Create(ctx, d.Ino, bigName(i), 0o644, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Reopen so badger's background flushes of the creates are over and
	// do not show in the heap. Then stream in pages with resume, as FUSE
	// does, and watch the heap.
	e.reopen(t)
	st = e.staging(t, "v")
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	after, count := "", 0
	for {
		page := 0
		err := st.Tree().ReadDir(ctx, d.Ino, after, func(de layers.Dirent) bool {
			if want := bigName(count); de.Name != want {
				t.Fatalf("entry %d: %q, want %q", count, de.Name, want)
			}
			count++
			page++
			after = de.Name
			if count%10000 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
			return page < 1000
		})
		if err != nil {
			t.Fatal(err)
		}
		if page < 1000 {
			break
		}
	}
	if count != n {
		t.Fatalf("listed %d entries, want %d", count, n)
	}
	// 100k entries of 200-byte names in memory would be over 20 MiB of strings and structs;
	// streaming keeps the growth to badger's iterator buffers.
	t.Logf("heap growth while listing: %d KiB", (max(peak, base)-base)>>10)
	if peak > base && peak-base > 12<<20 {
		t.Errorf("heap grew by %d MiB while listing", (peak-base)>>20)
	}
}

func TestReopenKeepsSynced(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	st := e.staging(t, "v")
	rng := rand.New(rand.NewSource(7))
	data := make([]byte, 3<<20+123)
	rng.Read(data)
	a, err := st.Create(ctx, layers.RootIno, "synced", 0o600, 5, 6, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.SetXattr(ctx, a.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := st.Create(ctx, layers.RootIno, "unflushed", 0o600, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, b.Ino, []byte("closed by Close"), 0); err != nil {
		t.Fatal(err)
	}
	e.reopen(t)
	st = e.staging(t, "v")
	for _, c := range []struct {
		name string
		want []byte
	}{{"synced", data}, {"unflushed", []byte("closed by Close")}} {
		got, err := st.Tree().Lookup(ctx, layers.RootIno, c.name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(c.want)+10)
		n, err := st.Tree().ReadAt(ctx, got.Ino, buf, 0)
		if err != nil || !bytes.Equal(buf[:n], c.want) {
			t.Fatalf("%s after reopen: %d bytes, %v", c.name, n, err)
		}
	}
	if v, err := st.Tree().GetXattr(ctx, a.Ino, "user.k"); err != nil || string(v) != "v" {
		t.Fatalf("xattr after reopen: %q %v", v, err)
	}
	// New inodes must not reuse numbers after reopen.
	c, err := st.Create(ctx, layers.RootIno, "new", 0o600, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Ino <= b.Ino {
		t.Fatalf("inode %d reused after reopen (last was %d)", c.Ino, b.Ino)
	}
}

func TestReleaseOnOverwrite(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	a, _ := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 5; i++ {
		p := make([]byte, 2<<20)
		rng.Read(p)
		if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
			t.Fatal(err)
		}
		if err := st.FlushFile(ctx, a.Ino, true); err != nil {
			t.Fatal(err)
		}
	}
	if chunks, refs := e.cs.Refs(1); chunks != 2 || refs != 2 {
		t.Fatalf("after overwrites: %d chunks, %d refs; want 2, 2", chunks, refs)
	}
	if err := st.Unlink(ctx, layers.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	// Chunks are released once the change that dropped them is in the index.
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if chunks, refs := e.cs.Refs(1); chunks != 0 || refs != 0 {
		t.Fatalf("after unlink: %d chunks, %d refs; want 0", chunks, refs)
	}
}

// bigName makes long names so that holding a whole directory in memory
// would show clearly in the heap.
func bigName(i int) string { return fmt.Sprintf("file-%07d-", i) + strings.Repeat("n", 190) }

func TestTruncateToZeroUpdatesTimes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	clock := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := layers.Open(ctx, openDB(t, ""), e.cs, layers.Options{SpoolDir: t.TempDir(), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.CreateVolume(ctx, "v", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, _ := r.Staging(ctx, "v")
	a, _ := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if _, err := st.WriteAt(ctx, a.Ino, []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FlushFile(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Hour)
	zero := int64(0)
	got, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Size: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 0 || !got.Mtime.Equal(clock) || !got.Ctime.Equal(clock) {
		t.Fatalf("after truncate: size %d mtime %v ctime %v, want 0 and %v", got.Size, got.Mtime, got.Ctime, clock)
	}
}

func TestUnlinkedWhileHeld(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	a, err := st.Create(ctx, layers.RootIno, "tmp", 0o600, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	st.Hold(a.Ino)
	if _, err := st.WriteAt(ctx, a.Ino, bytes.Repeat([]byte("x"), 5000), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FlushFile(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
	if err := st.Unlink(ctx, layers.RootIno, "tmp"); err != nil {
		t.Fatal(err)
	}
	// Still usable through the handle, with nlink 0.
	if _, err := st.WriteAt(ctx, a.Ino, []byte("yy"), 5000); err != nil {
		t.Fatal(err)
	}
	got, err := st.Tree().GetAttr(ctx, a.Ino)
	if err != nil || got.Nlink != 0 || got.Size != 5002 {
		t.Fatalf("held unlinked inode: %+v, %v", got, err)
	}
	buf := make([]byte, 10)
	if n, err := st.Tree().ReadAt(ctx, a.Ino, buf, 4995); err != nil || string(buf[:n]) != "xxxxxyy" {
		t.Fatalf("read held unlinked inode: %q, %v", buf[:n], err)
	}
	if _, err := st.Tree().Lookup(ctx, layers.RootIno, "tmp"); !errors.Is(err, layers.ErrNotFound) {
		t.Fatalf("lookup of unlinked name: %v", err)
	}
	if err := st.Unhold(ctx, a.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Tree().GetAttr(ctx, a.Ino); !errors.Is(err, layers.ErrNotFound) {
		t.Fatalf("inode after last unhold: %v", err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if chunks, refs := e.cs.Refs(1); chunks != 0 || refs != 0 {
		t.Fatalf("after last unhold: %d chunks %d refs", chunks, refs)
	}
	// An unheld file goes at once.
	b, _ := st.Create(ctx, layers.RootIno, "plain", 0o600, 0, 0, 0)
	if err := st.Unlink(ctx, layers.RootIno, "plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Tree().GetAttr(ctx, b.Ino); !errors.Is(err, layers.ErrNotFound) {
		t.Fatalf("unheld inode after unlink: %v", err)
	}
}

// fullStore fails Puts with ENOSPC while full is set.
type fullStore struct {
	*memstore.Store
	full atomic.Bool
}

func (f *fullStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	if f.full.Load() {
		return chunk.ID{}, false, fmt.Errorf("append to segment: %w", syscall.ENOSPC)
	}
	return f.Store.Put(ctx, kind, data)
}

func TestNoSpace(t *testing.T) {
	ctx := context.Background()
	cs := &fullStore{Store: memstore.New()}
	r, st := repoOver(t, cs)
	a, _ := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	data := bytes.Repeat([]byte("full"), 100000)
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	cs.full.Store(true)
	if err := st.FlushFile(ctx, a.Ino, true); !errors.Is(err, layers.ErrNoSpace) {
		t.Fatalf("flush on a full store: %v, want ErrNoSpace", err)
	}
	if _, err := r.Commit(ctx, "v", layers.CommitOptions{}); !errors.Is(err, layers.ErrNoSpace) {
		t.Fatalf("commit on a full store: %v, want ErrNoSpace", err)
	}
	if revs, _ := r.Revisions(ctx, "v"); len(revs) != 0 {
		t.Fatalf("a failed commit left %d revisions", len(revs))
	}
	// Space comes back: nothing was lost.
	cs.full.Store(false)
	if _, err := r.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data))
	if n, err := st.Tree().ReadAt(ctx, a.Ino, buf, 0); err != nil || !bytes.Equal(buf[:n], data) {
		t.Fatalf("data after space came back: %d, %v", n, err)
	}
}

// TestCommitSkipsHeldOrphans: a file unlinked while a handle still holds
// it is in no directory of the revision, so the revision's file count and
// size leave it out.
func TestCommitSkipsHeldOrphans(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	write := func(name string, n int) layers.Ino {
		t.Helper()
		a, err := st.Create(ctx, layers.RootIno, name, 0o600, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteAt(ctx, a.Ino, bytes.Repeat([]byte("x"), n), 0); err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	write("kept", 3000)
	one, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := write("held", 5000)
	st.Hold(held)
	if err := st.Unlink(ctx, layers.RootIno, "held"); err != nil {
		t.Fatal(err)
	}
	two, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if two.Files != one.Files || two.Size != one.Size {
		t.Errorf("with a held unlinked file: %d files, %d bytes; want %d, %d as before", two.Files, two.Size, one.Files, one.Size)
	}
	if err := st.Unhold(ctx, held); err != nil {
		t.Fatal(err)
	}
	three, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if three.Files != one.Files || three.Size != one.Size {
		t.Errorf("after the last handle went: %d files, %d bytes; want %d, %d", three.Files, three.Size, one.Files, one.Size)
	}
}

// TestMutationsOutliveCancel: a metadata change whose context is already
// done (the caller of a FUSE request got a signal) still happens whole,
// so rename(2) and friends never fail with EINTR.
func TestMutationsOutliveCancel(t *testing.T) {
	e := newEnv(t, false)
	st := e.staging(t, "v")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	steps := []struct {
		name string
		run  func() error
	}{
		{"mkdir", func() error { _, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0); return err }},
		{"create", func() error { _, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0); return err }},
		{"rename", func() error { return st.Rename(ctx, layers.RootIno, "f", layers.RootIno, "g", 0) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s with a cancelled context: %v", s.name, err)
		}
	}
	for name, want := range map[string]bool{"d": true, "g": true, "f": false} {
		_, err := st.Tree().Lookup(context.Background(), layers.RootIno, name)
		if (err == nil) != want {
			t.Errorf("lookup %s after the changes: %v, want found=%v", name, err, want)
		}
	}
}
