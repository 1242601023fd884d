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
)

type opCounter struct {
	mu sync.Mutex
	n  map[string]int
}

var rxRe = regexp.MustCompile(`rx \d+: (\w+)`)

func (c *opCounter) Write(p []byte) (int, error) {
	if os.Getenv("DIAG_LOG") != "" {
		os.Stderr.Write(p)
	}
	if m := rxRe.FindSubmatch(p); m != nil {
		c.mu.Lock()
		c.n[string(m[1])]++
		c.mu.Unlock()
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
	c := &opCounter{n: map[string]int{}}
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
		t.Logf("%-12s %6d", k, c.n[k])
	}
}
