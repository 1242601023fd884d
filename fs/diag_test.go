package fs

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
)

type opCounter struct {
	mu    sync.Mutex
	n     map[string]int
	d     map[string]time.Duration
	start map[string]time.Time
	op    map[string]string
}

var (
	rxRe = regexp.MustCompile(`rx (\d+): (\w+)`)
	txRe = regexp.MustCompile(`tx (\d+):`)
)

func newOpCounter() *opCounter {
	return &opCounter{n: map[string]int{}, d: map[string]time.Duration{}, start: map[string]time.Time{}, op: map[string]string{}}
}

// options are mount options that log every request into c.
func (c *opCounter) options(r *layers.Repo) Options {
	return Options{Repo: r, Debug: true, Logger: slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

func (c *opCounter) Write(p []byte) (int, error) {
	if os.Getenv("DIAG_LOG") != "" {
		os.Stderr.Write(p)
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := rxRe.FindSubmatch(p); m != nil {
		c.n[string(m[2])]++
		c.start[string(m[1])] = now
		c.op[string(m[1])] = string(m[2])
	} else if m := txRe.FindSubmatch(p); m != nil {
		id := string(m[1])
		if t0, ok := c.start[id]; ok {
			c.d[c.op[id]] += now.Sub(t0)
			delete(c.start, id)
		}
	}
	return len(p), nil
}

// BenchmarkOpsRsync reports which FUSE requests an rsync -a into staging
// makes and how long the server spends on each (set DIAG_SRC, default
// GOROOT/src/net; DIAG_LOG=1 dumps the request log).
//
//	go test -run '^$' -bench OpsRsync -benchtime=1x -v ./fs/
func BenchmarkOpsRsync(b *testing.B) {
	t := b
	src := diagSrc(b, "src/net")
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	c := newOpCounter()
	m, err := MountStaging(context.Background(), mnt, st, c.options(r))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	run(t, "rsync", "-a", src+"/", mnt+"/")
	t.Logf("rsync: %v", time.Since(t0))
	m.Unmount()
	c.report(t)
}

// BenchmarkOpsColdTar reports the FUSE requests of a cold tar of a
// revision (DIAG_SRC, default GOROOT/src).
func BenchmarkOpsColdTar(b *testing.B) {
	t := b
	src := diagSrc(b, "src")
	ctx := context.Background()
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	m, err := MountStaging(ctx, mnt, st, Options{Repo: r})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "rsync", "-a", src+"/", mnt+"/")
	m.Unmount()
	tree := commitTree(t, r, "d")
	c := newOpCounter()
	rm, err := MountTree(ctx, mnt, tree, c.options(r))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Unmount()
	dropCaches(t)
	t0 := time.Now()
	run(t, "sh", "-c", "cd "+mnt+" && tar cf - . | cat >/dev/null")
	t.Logf("tar: %v", time.Since(t0))
	c.report(t)
}

func diagSrc(b *testing.B, sub string) string {
	if s := os.Getenv("DIAG_SRC"); s != "" {
		return s
	}
	root, _ := benchCorpus(b)
	return filepath.Join(root, sub)
}

func (c *opCounter) report(t testing.TB) {
	var names []string
	for k := range c.n {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return c.n[names[i]] > c.n[names[j]] })
	for _, k := range names {
		t.Logf("%-12s %6d %10v %8v/op", k, c.n[k], c.d[k].Round(time.Millisecond), (c.d[k] / time.Duration(c.n[k])).Round(time.Microsecond))
	}
}

// BenchmarkOpsColdBigRead reports the READ requests of a cold sequential
// read of one 512 MiB file from a revision (1 MiB requests expected).
func BenchmarkOpsColdBigRead(b *testing.B) {
	t := b
	ctx := context.Background()
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	m, err := MountStaging(ctx, mnt, st, Options{Repo: r})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "sh", "-c", "head -c 512M /dev/urandom > "+mnt+"/big")
	m.Unmount()
	tree := commitTree(t, r, "d")
	c := newOpCounter()
	rm, err := MountTree(ctx, mnt, tree, c.options(r))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Unmount()
	dropCaches(t)
	t0 := time.Now()
	run(t, "sh", "-c", "cat "+mnt+"/big >/dev/null")
	t.Logf("cat 512 MiB: %v", time.Since(t0))
	c.report(t)
}

// BenchmarkOpsNoChange reports the FUSE requests of a second rsync -a
// into staging after a commit, with caches dropped (DIAG_SRC, default
// GOROOT/src).
func BenchmarkOpsNoChange(b *testing.B) {
	t := b
	src := diagSrc(b, "src")
	ctx := context.Background()
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	c := newOpCounter()
	m, err := MountStaging(ctx, mnt, st, c.options(r))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	run(t, "rsync", "-a", src+"/", mnt+"/")
	if _, err := r.Commit(ctx, "d", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	c.reset()
	t0 := time.Now()
	run(t, "rsync", "-a", src+"/", mnt+"/")
	t.Logf("rsync no-change: %v", time.Since(t0))
	c.report(t)
}
