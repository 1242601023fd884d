package fs

import (
	"context"
	"log/slog"
	"os"
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

func TestDiagOps(t *testing.T) {
	src := os.Getenv("DIAG_SRC")
	if src == "" {
		t.Skip("DIAG_SRC not set")
	}
	r := testRepo(t)
	st := testStaging(t, r, "d")
	mnt := mountDir(t)
	c := &opCounter{n: map[string]int{}, d: map[string]time.Duration{}, start: map[string]time.Time{}, op: map[string]string{}}
	m, err := MountStaging(context.Background(), mnt, st, Options{Repo: r, Debug: true, Logger: slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	run(t, "rsync", "-a", src+"/", mnt+"/")
	t.Logf("rsync: %v", time.Since(t0))
	m.Unmount()
	var names []string
	for k := range c.n {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return c.n[names[i]] > c.n[names[j]] })
	for _, k := range names {
		t.Logf("%-12s %6d %10v %8v/op", k, c.n[k], c.d[k].Round(time.Millisecond), (c.d[k] / time.Duration(c.n[k])).Round(time.Microsecond))
	}
}

func TestDiagRead(t *testing.T) {
	src := os.Getenv("DIAG_SRC")
	if src == "" {
		t.Skip("DIAG_SRC not set")
	}
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
	rev, err := r.Commit(ctx, "d", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := r.Snapshot(ctx, "d", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	c := &opCounter{n: map[string]int{}, d: map[string]time.Duration{}, start: map[string]time.Time{}, op: map[string]string{}}
	rm, err := MountTree(ctx, mnt, tree, Options{Repo: r, Debug: true, Logger: slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Unmount()
	run(t, "sync")
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
	t0 := time.Now()
	run(t, "sh", "-c", "cd "+mnt+" && tar cf - . | cat >/dev/null")
	t.Logf("tar: %v", time.Since(t0))
	c.report(t)
}

func (c *opCounter) report(t *testing.T) {
	var names []string
	for k := range c.n {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return c.n[names[i]] > c.n[names[j]] })
	for _, k := range names {
		t.Logf("%-12s %6d %10v %8v/op", k, c.n[k], c.d[k].Round(time.Millisecond), (c.d[k] / time.Duration(c.n[k])).Round(time.Microsecond))
	}
}

func TestDiagBigRead(t *testing.T) {
	if os.Getenv("DIAG_BIG") == "" {
		t.Skip("DIAG_BIG not set")
	}
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
	rev, err := r.Commit(ctx, "d", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := r.Snapshot(ctx, "d", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	c := &opCounter{n: map[string]int{}, d: map[string]time.Duration{}, start: map[string]time.Time{}, op: map[string]string{}}
	rm, err := MountTree(ctx, mnt, tree, Options{Repo: r, Debug: true, Logger: slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Unmount()
	run(t, "sync")
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
	t0 := time.Now()
	run(t, "sh", "-c", "cat "+mnt+"/big >/dev/null")
	t.Logf("cat 512 MiB: %v", time.Since(t0))
	c.report(t)
}
