package fs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

// testMaster is the master key of test repositories.
var testMaster = [32]byte{7, 7, 7}

// testRepo creates a real repository (store + badger index) in t.TempDir
// and opens layers on it.
func testRepo(t testing.TB) *layers.Repo {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := store.Create(ctx, dir, format.Config{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := format.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, dir, cfg, crypt.NewKeys(testMaster), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: spool})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close layers: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
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

// stagingMount mounts the staging of a new fs volume of a new repository
// on a fresh directory until the test ends, and returns what it made.
func stagingMount(t testing.TB, name string) (*layers.Repo, *layers.Staging, *Mount, string) {
	t.Helper()
	r := testRepo(t)
	st := testStaging(t, r, name)
	dir := mountDir(t)
	m, err := MountStaging(context.Background(), dir, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	return r, st, m, dir
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
		// Files a failed test left open would, at process exit, send
		// FLUSH to this very process while it dies: the test binary then
		// never exits and go test waits forever. Aborting the connection
		// fails those requests instead.
		_ = syscall.Unmount(m.Dir(), syscall.MNT_DETACH)
		_ = AbortConn(m.Conn())
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

// mountTestStaging mounts a new staging volume name for the test (owner
// only, or open to other users) and returns the mountpoint.
func mountTestStaging(t testing.TB, name string, allowOther bool) string {
	t.Helper()
	_, dir := mountStagingOpts(t, name, func(r *layers.Repo) Options {
		opts := testOpts(t, r)
		opts.AllowOther = allowOther
		return opts
	})
	return dir
}

// mountStagingOpts mounts a new staging volume name of a new repository
// with the options opts gives for it, unmounted when the test ends.
func mountStagingOpts(t testing.TB, name string, opts func(*layers.Repo) Options) (*Mount, string) {
	t.Helper()
	r := testRepo(t)
	st := testStaging(t, r, name)
	dir := mountDir(t)
	m, err := MountStaging(context.Background(), dir, st, opts(r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	return m, dir
}

// dropCaches makes the kernel drop its page, dentry and inode caches
// (and so send us FORGETs), after writing back what is dirty.
func dropCaches(t testing.TB) {
	t.Helper()
	run(t, "sync")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// commitTree commits the staging head of volume vol and opens the new
// revision.
func commitTree(t testing.TB, r *layers.Repo, vol string) *layers.Tree {
	t.Helper()
	ctx := context.Background()
	rev, err := r.Commit(ctx, vol, layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := r.Snapshot(ctx, vol, rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// openStat opens path read-only and stats it; the caller closes the file.
func openStat(t testing.TB, path string) (*os.File, os.FileInfo) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return f, fi
}
