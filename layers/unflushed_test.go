package layers_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

// crashStore keeps new chunks pending until Flush, as the real store keeps
// them in its open segment; crash drops what is pending, as kill -9 would.
type crashStore struct {
	*memstore.Store
	mu      sync.Mutex
	pending map[chunk.ID][]byte
	refs    map[chunk.ID]int
	failing bool // Flush fails, making nothing durable
}

func newCrashStore() *crashStore {
	return &crashStore{Store: memstore.New(), pending: map[chunk.ID][]byte{}, refs: map[chunk.ID]int{}}
}

func (s *crashStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind != chunk.KindData {
		return s.Store.Put(ctx, kind, data)
	}
	id := chunk.ID(sha256.Sum256(data))
	if ok, _ := s.Store.Has(ctx, id); ok {
		return s.Store.Put(ctx, kind, data)
	}
	_, dup := s.pending[id]
	if !dup {
		s.pending[id] = append([]byte(nil), data...)
	}
	s.refs[id]++
	return id, !dup, nil
}

func (s *crashStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	b, ok := s.pending[id]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	return s.Store.Get(ctx, id)
}

func (s *crashStore) Has(ctx context.Context, id chunk.ID) (bool, error) {
	s.mu.Lock()
	_, ok := s.pending[id]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	return s.Store.Has(ctx, id)
}

func (s *crashStore) Release(ctx context.Context, ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rest []chunk.ID
	for _, id := range ids {
		if s.refs[id] > 0 {
			if s.refs[id]--; s.refs[id] == 0 {
				delete(s.pending, id)
				delete(s.refs, id)
			}
			continue
		}
		rest = append(rest, id)
	}
	return s.Store.Release(ctx, rest)
}

func (s *crashStore) Retain(ctx context.Context, ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rest []chunk.ID
	for _, id := range ids {
		if _, ok := s.pending[id]; !ok {
			rest = append(rest, id)
		}
	}
	// The durable store first: it checks every id before adding any.
	if err := s.Store.Retain(ctx, rest); err != nil {
		return err
	}
	for _, id := range ids {
		if _, ok := s.pending[id]; ok {
			s.refs[id]++
		}
	}
	return nil
}

func (s *crashStore) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return errors.New("flush failed")
	}
	for id, b := range s.pending {
		for i := 0; i < s.refs[id]; i++ {
			if _, _, err := s.Store.Put(ctx, chunk.KindData, b); err != nil {
				return err
			}
		}
	}
	s.pending, s.refs = map[chunk.ID][]byte{}, map[chunk.ID]int{}
	return nil
}

func (s *crashStore) crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending, s.refs = map[chunk.ID][]byte{}, map[chunk.ID]int{}
}

// crashEnv is a repo over an on-disk badger DB and a crashStore that can
// be abandoned without Close and opened again.
type crashEnv struct {
	t     *testing.T
	dir   string
	spool string
	cs    *crashStore
	repo  *layers.Repo
	stop  func()
	// idleSync is Options.IdleSync: off unless a test turns it on, so
	// that a slow run cannot make durable what a test crashes away.
	idleSync time.Duration
}

func newCrashEnv(t *testing.T) *crashEnv {
	e := &crashEnv{t: t, dir: t.TempDir(), spool: t.TempDir(), cs: newCrashStore(), idleSync: -1}
	e.open()
	return e
}

func (e *crashEnv) open() {
	e.t.Helper()
	db := openDB(e.t, e.dir)
	r, err := layers.Open(context.Background(), db, e.cs, layers.Options{SpoolDir: e.spool, IdleSync: e.idleSync})
	if err != nil {
		e.t.Fatalf("open layers: %v", err)
	}
	e.repo = r
	closed := false
	e.stop = func() {
		if !closed {
			closed = true
			_ = db.Close()
		}
	}
	e.t.Cleanup(func() {
		if !closed {
			_ = r.Close()
			e.stop()
		}
	})
}

// crash abandons the repo as kill -9 would: buffered file data and
// chunks the store had not flushed are gone, index writes stay.
//
// Metadata changes wait in memory up to pendingAge before they reach the
// index; the crash comes after that, which is when buffered data and
// recorded attributes disagree.
func (e *crashEnv) crash() {
	e.t.Helper()
	if err := layers.FlushPending(e.repo); err != nil {
		e.t.Fatal(err)
	}
	e.crashNow()
}

// crashNow crashes before the pending metadata is flushed: the index then
// holds some prefix of the changes, down to the last durable point.
func (e *crashEnv) crashNow() {
	e.t.Helper()
	e.cs.crash()
	layers.StopBackground(e.repo)
	e.stop() // the layers are never closed: no clean marker
	e.open()
}

func (e *crashEnv) staging(name string) *layers.Staging {
	e.t.Helper()
	st, err := e.repo.Staging(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// newStaging creates fs volume name and returns its staging head.
func (e *crashEnv) newStaging(name string) *layers.Staging {
	e.t.Helper()
	if _, err := e.repo.CreateVolume(context.Background(), name, layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		e.t.Fatal(err)
	}
	return e.staging(name)
}

// writeFile creates name in parent holding data and, if mtime is not nil,
// sets it as rsync does after writing.
func writeFile(t *testing.T, st *layers.Staging, parent layers.Ino, name string, data []byte, mtime *time.Time) layers.Ino {
	t.Helper()
	ctx := context.Background()
	a, err := st.Create(ctx, parent, name, 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	if mtime != nil {
		if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Mtime: mtime}); err != nil {
			t.Fatal(err)
		}
	}
	return a.Ino
}

func seeded(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// TestCrashMarksUnflushedFiles: a file whose attributes (size, mtime as
// rsync sets them) reached the index while its data was buffered comes
// back after a crash with the Unix epoch as mtime, so rsync's quick check
// sends it again; durable files keep their content and mtime.
func TestCrashMarksUnflushedFiles(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	st := e.newStaging("v")
	srcTime := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	type file struct {
		name    string
		data    []byte
		durable bool // fsynced: must come back intact
	}
	write := func(st *layers.Staging, f file) layers.Ino {
		t.Helper()
		ino := writeFile(t, st, layers.RootIno, f.name, f.data, &srcTime)
		if f.durable {
			if err := st.FlushFile(ctx, ino, true); err != nil {
				t.Fatal(err)
			}
		}
		return ino
	}
	// Written across a commit: committed content, then rewritten.
	across := write(st, file{name: "across", data: seeded(1, 3000)})
	if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	files := []file{
		{name: "small", data: seeded(2, 5000)},
		{name: "spooled", data: seeded(3, 3<<20)},
		{name: "durable", data: seeded(4, 7000), durable: true},
		{name: "flushed-not-durable", data: seeded(5, 9000)},
		{name: "linked", data: seeded(6, 4000)},
	}
	inos := map[string]layers.Ino{}
	for _, f := range files {
		inos[f.name] = write(st, f)
	}
	// Chunked and recorded, but the store never made the chunk durable.
	if err := st.FlushFile(ctx, inos["flushed-not-durable"], false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Link(ctx, inos["linked"], layers.RootIno, "linked2"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, across, seeded(7, 3000), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetAttr(ctx, across, layers.SetAttr{Mtime: &srcTime}); err != nil {
		t.Fatal(err)
	}
	// Let background flushing run for some files, as it would in a server.
	if err := st.FlushFile(ctx, inos["small"], false); err != nil {
		t.Fatal(err)
	}
	e.crash()

	st = e.staging("v")
	tr := st.Tree()
	lostInos := map[layers.Ino]bool{} // hard links share one
	for _, name := range []string{"across", "small", "spooled", "durable", "flushed-not-durable", "linked", "linked2"} {
		a, err := tr.Lookup(ctx, layers.RootIno, name)
		if err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		var want []byte
		durable := false
		for _, f := range files {
			if f.name == name {
				want, durable = f.data, f.durable
			}
		}
		got := make([]byte, a.Size)
		n, err := tr.ReadAt(ctx, a.Ino, got, 0)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		got = got[:n]
		intact := want != nil && bytes.Equal(got, want)
		switch {
		case durable:
			if !intact || !a.Mtime.Equal(srcTime) {
				t.Errorf("%s: durable file changed: intact %v, mtime %v", name, intact, a.Mtime)
			}
		case a.Mtime.Equal(srcTime) && !intact && name != "across":
			t.Errorf("%s: content lost but mtime %v still claims it is up to date", name, a.Mtime)
		case name == "across" && a.Mtime.Equal(srcTime) && !bytes.Equal(got, seeded(1, 3000)) && !bytes.Equal(got, seeded(7, 3000)):
			t.Errorf("across: content neither old nor new, mtime %v", a.Mtime)
		}
		if !durable && !intact && a.Mtime.Unix() != 0 {
			t.Errorf("%s: lost data, mtime %v, want the epoch", name, a.Mtime)
		}
		if a.Mtime.Unix() == 0 {
			lostInos[a.Ino] = true
		}
	}
	// A commit would keep the lost files as zeros: it refuses, naming
	// how many, unless told to keep them.
	lost := len(lostInos)
	var le *layers.LostDataError
	if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); !errors.As(err, &le) || le.Files != lost || lost == 0 {
		t.Fatalf("commit with %d lost files: %v, want a LostDataError for them", lost, err)
	}
	if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{AllowLost: true}); err != nil {
		t.Fatal(err)
	}
	// A clean reopen finds nothing to fix: mtimes set now survive.
	a, _ := tr.Lookup(ctx, layers.RootIno, "small")
	if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Mtime: &srcTime}); err != nil {
		t.Fatal(err)
	}
	if err := e.repo.Close(); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.open()
	if a, err := e.staging("v").Tree().GetAttr(ctx, a.Ino); err != nil || !a.Mtime.Equal(srcTime) {
		t.Fatalf("after clean reopen: %v, %v", a.Mtime, err)
	}
}

// TestCrashKeepsFsyncedRewrite: a file fsynced, then rewritten and flushed
// without fsync, never comes back as holes: the fsynced or the new content.
func TestCrashKeepsFsyncedRewrite(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	st := e.newStaging("v")
	a, _ := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	old, neu := seeded(10, 20000), seeded(11, 20000)
	if _, err := st.WriteAt(ctx, a.Ino, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FlushFile(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteAt(ctx, a.Ino, neu, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Rewrite once more; the flush chunks and records it, but the store
	// never makes the chunks durable.
	if _, err := st.WriteAt(ctx, a.Ino, old, 0); err != nil {
		t.Fatal(err)
	}
	e.cs.mu.Lock()
	e.cs.failing = true
	e.cs.mu.Unlock()
	if err := st.FlushFile(ctx, a.Ino, true); err == nil {
		t.Fatal("fsync succeeded with a failing store")
	}
	e.cs.mu.Lock()
	e.cs.failing = false
	e.cs.mu.Unlock()
	e.crash()
	got := make([]byte, len(old))
	n, err := e.staging("v").Tree().ReadAt(ctx, a.Ino, got, 0)
	if err != nil || n != len(old) || !(bytes.Equal(got, old) || bytes.Equal(got, neu)) {
		t.Fatalf("after crash: %d bytes, %v, content old %v new %v", n, err, bytes.Equal(got, old), bytes.Equal(got, neu))
	}
}

// TestCrashKeepsFlushedBlocks: a block acknowledged by Flush and then
// rewritten and evicted into the index (not flushed) comes back as one of
// the two, never as the version below.
func TestCrashKeepsFlushedBlocks(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	const bs = 64 << 10
	if _, err := e.repo.CreateVolume(ctx, "b", layers.VolumeSpec{Type: layers.TypeBlock, Size: 80 << 20, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	d, err := e.repo.StagingDisk(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	old, neu := seeded(20, bs), seeded(21, bs)
	if _, err := d.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(ctx, neu, 0); err != nil {
		t.Fatal(err)
	}
	// Enough other blocks to push the dirty cache past its bound.
	fill := seeded(22, bs)
	for off := int64(bs); off < 70<<20; off += bs {
		fill[0] = byte(off / bs)
		if _, err := d.WriteAt(ctx, fill, off); err != nil {
			t.Fatal(err)
		}
	}
	e.crash()
	d, err = e.repo.StagingDisk(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, bs)
	if _, err := d.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) && !bytes.Equal(got, neu) {
		t.Fatalf("flushed block lost after crash (zero: %v)", chunk.IsZero(got))
	}
}

// TestCrashDropsHeldOrphans: a file unlinked while a handle held it is
// dropped by the Open after a crash (its holds died with the process),
// releasing its chunks; a relinked one stays.
func TestCrashDropsHeldOrphans(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	st := e.newStaging("v")
	mk := func(name string, seed int64) layers.Ino {
		t.Helper()
		ino := writeFile(t, st, layers.RootIno, name, seeded(seed, 10000), nil)
		if err := st.FlushFile(ctx, ino, true); err != nil {
			t.Fatal(err)
		}
		st.Hold(ino)
		if err := st.Unlink(ctx, layers.RootIno, name); err != nil {
			t.Fatal(err)
		}
		return ino
	}
	gone := mk("gone", 30)
	back := mk("back", 31)
	if _, err := st.Link(ctx, back, layers.RootIno, "back2"); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, refs := e.cs.Refs(chunk.KindData); refs != 2 {
		t.Fatalf("%d data references before the crash, want 2", refs)
	}
	e.crash()
	tr := e.staging("v").Tree()
	if _, err := tr.GetAttr(ctx, gone); !errors.Is(err, layers.ErrNotFound) {
		t.Errorf("orphan after crash: %v, want ErrNotFound", err)
	}
	if a, err := tr.GetAttr(ctx, back); err != nil || a.Nlink != 1 {
		t.Errorf("relinked file after crash: %+v, %v", a, err)
	}
	if _, refs := e.cs.Refs(chunk.KindData); refs != 1 {
		t.Errorf("%d data references after the crash, want 1", refs)
	}
}

// TestCrashBeforeMetadataFlush: a crash while metadata changes still wait
// in memory loses a tail of them whole. After it, what was made durable is
// intact, and every name left resolves to an inode that reads without
// error (no entry points at a missing inode, no half rename) and whose
// content, if not intact, does not carry the mtime rsync set.
func TestCrashBeforeMetadataFlush(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	st := e.newStaging("v")
	srcTime := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	data := map[string][]byte{}
	mk := func(parent layers.Ino, name string, seed int64) layers.Ino {
		t.Helper()
		data[name] = seeded(seed, 2000+int(seed)*100)
		return writeFile(t, st, parent, name, data[name], &srcTime)
	}
	durable := mk(layers.RootIno, "durable", 1)
	if err := st.FlushFile(ctx, durable, true); err != nil {
		t.Fatal(err)
	}
	d, err := st.Mkdir(ctx, layers.RootIno, "dir", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 200; i++ {
		name := fmt.Sprintf("f%03d", i)
		ino := mk(d.Ino, name+".tmp", 10+i)
		data[name] = data[name+".tmp"]
		if i%3 == 0 {
			if err := st.FlushFile(ctx, ino, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Rename(ctx, d.Ino, name+".tmp", d.Ino, name, 0); err != nil {
			t.Fatal(err)
		}
		if i == 99 { // the background flush ran once, midway
			if err := layers.FlushPending(e.repo); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.crashNow()

	tr := e.staging("v").Tree()
	a, err := tr.Lookup(ctx, layers.RootIno, "durable")
	if err != nil {
		t.Fatalf("durable file after crash: %v", err)
	}
	got := make([]byte, a.Size)
	if n, err := tr.ReadAt(ctx, a.Ino, got, 0); err != nil || !bytes.Equal(got[:n], data["durable"]) || !a.Mtime.Equal(srcTime) {
		t.Fatalf("durable file changed: %v, mtime %v", err, a.Mtime)
	}
	dir, err := tr.Lookup(ctx, layers.RootIno, "dir")
	if err != nil {
		t.Fatalf("dir, in the index since the midway flush: %v", err)
	}
	var names []string
	if err := tr.ReadDir(ctx, dir.Ino, "", func(d layers.Dirent) bool { names = append(names, d.Name); return true }); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		a, err := tr.Lookup(ctx, dir.Ino, name)
		if err != nil {
			t.Errorf("%s listed but does not resolve: %v", name, err)
			continue
		}
		got := make([]byte, a.Size)
		n, err := tr.ReadAt(ctx, a.Ino, got, 0)
		if err != nil {
			t.Errorf("%s: read: %v", name, err)
			continue
		}
		// What rsync compares is the mtime it set (the source's): a
		// file whose content is not all there must not carry it.
		if !bytes.Equal(got[:n], data[name]) && a.Mtime.Equal(srcTime) {
			t.Errorf("%s: content lost but mtime %v still claims it is up to date", name, a.Mtime)
		}
	}
	if len(names) < 100 {
		t.Errorf("%d names after the crash, want at least the 100 flushed midway", len(names))
	}
	t.Logf("%d of 200 renamed files survived the crash", len(names))
}
