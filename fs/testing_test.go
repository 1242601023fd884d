package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store/chunk"
)

// memStore is an in-memory layers.ChunkStore for tests: ids are SHA-256 of
// the data, references counted.
type memStore struct {
	mu   sync.Mutex // guards data and refs
	data map[chunk.ID][]byte
	refs map[chunk.ID]int
}

func newMemStore() *memStore {
	return &memStore{data: map[chunk.ID][]byte{}, refs: map[chunk.ID]int{}}
}

func (m *memStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	id := chunk.ID(sha256.Sum256(data))
	m.mu.Lock()
	defer m.mu.Unlock()
	_, had := m.data[id]
	if !had {
		m.data[id] = append([]byte(nil), data...)
	}
	m.refs[id]++
	return id, !had, nil
}

func (m *memStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.data[id]
	if !ok {
		return nil, layers.ErrNotFound
	}
	return d, nil
}

func (m *memStore) Release(ctx context.Context, ids []chunk.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.refs[id]--
	}
	return nil
}

func (m *memStore) Flush(ctx context.Context) error { return nil }

// testRepo opens a layers.Repo on a fresh badger in t.TempDir.
func testRepo(t testing.TB) *layers.Repo {
	t.Helper()
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := layers.Open(context.Background(), db, newMemStore(), layers.Options{SpoolDir: spool})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close repo: %v", err)
		}
		db.Close()
	})
	return r
}

func testStaging(t testing.TB, r *layers.Repo, name string) *layers.Staging {
	t.Helper()
	ctx := context.Background()
	if _, err := r.CreateVolume(ctx, name, layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Staging(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// mountDir returns an empty directory to mount on.
func mountDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// unmountOnCleanup unmounts m at the end of the test, lazily if files
// are still open so a failed test never leaves a mount behind.
func unmountOnCleanup(t testing.TB, m *Mount) {
	t.Helper()
	t.Cleanup(func() {
		var err error
		for i := 0; i < 20; i++ {
			if err = m.Unmount(); err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("unmount %s: %v", m.Dir(), err)
		_ = syscall.Unmount(m.Dir(), syscall.MNT_DETACH)
	})
}

func testOpts(t testing.TB, r *layers.Repo) Options {
	return Options{Repo: r, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))}
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// run runs a command in a child process (touching our own mount from
// this process's goroutines is fine, but external tools must not share
// our process) and returns its combined output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func isErrno(err error, want syscall.Errno) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && errno == want
}
