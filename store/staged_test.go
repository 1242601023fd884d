package store

import (
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/store/shard"
)

// gatedLocal is a shard.Local whose staged files' fsync waits for a gate
// and can be made to fail, to test the window between a segment's shard
// files being written and being durable.
type gatedLocal struct {
	*shard.Local
	g *gate
}

var _ shard.Stager = gatedLocal{}

type gate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	open    bool
	failErr error
	waiting int
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) set(open bool, failErr error) {
	g.mu.Lock()
	g.open, g.failErr = open, failErr
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (b gatedLocal) Stage(ctx context.Context, name string, data ...[]byte) (shard.Staged, error) {
	st, err := b.Local.Stage(ctx, name, data...)
	if err != nil {
		return nil, err
	}
	return gatedStaged{st, b.g}, nil
}

type gatedStaged struct {
	shard.Staged
	g *gate
}

func (s gatedStaged) Sync() error {
	s.g.mu.Lock()
	s.g.waiting++
	s.g.cond.Broadcast()
	for !s.g.open {
		s.g.cond.Wait()
	}
	s.g.waiting--
	err := s.g.failErr
	s.g.mu.Unlock()
	if err != nil {
		s.Staged.Abort()
		return err
	}
	return s.Staged.Sync()
}

func gatedBackends(t *testing.T, dir string, n int) ([]shard.Backend, *gate) {
	t.Helper()
	g := newGate()
	var bs []shard.Backend
	for i := range n {
		l, err := shard.OpenLocal(filepath.Join(dir, "shards", strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, gatedLocal{l, g})
	}
	return bs, g
}

// TestReadWhileSyncing reads chunks whose segment buffers were recycled
// while their shard files wait for fsync, and checks that the producer is
// not held up by those fsyncs.
func TestReadWhileSyncing(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	bs, g := gatedBackends(t, dir, 6)
	s := openStore(t, dir, cfg, Options{Backends: bs})
	// Three full 1 MiB segments: more than maxPendingSeals could hold
	// if fsync kept the buffers.
	want := putRandom(t, s, 21, 70, 100_000)
	s.mu.Lock()
	for s.memSeals > 0 || len(s.sealing) < 3 {
		s.cond.Wait()
	}
	syncing := len(s.sealing)
	s.mu.Unlock()
	g.mu.Lock()
	waiting := g.waiting
	g.mu.Unlock()
	if waiting == 0 {
		t.Fatalf("%d segments in sealing but no fsync waiting", syncing)
	}
	checkAll(t, s, want) // from the staged files
	g.set(true, nil)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, want)
	rep, err := s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || !rep.OK() || len(rep.Damaged) != 0 || len(rep.Orphans) != 0 {
		t.Fatalf("scrub: %+v, %v", rep, err)
	}
}

// TestSyncFailureRetried: when fsync of staged shard files fails, the
// segment is read back from its files and written again by the next
// Flush; nothing is lost.
func TestSyncFailureRetried(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	bs, g := gatedBackends(t, dir, 6)
	logs := &syncBuf{}
	s := openStore(t, dir, cfg, Options{Backends: bs, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	g.set(true, syscall.EIO)
	want := putRandom(t, s, 22, 70, 100_000)
	// The sealers' fsyncs fail; Flush retries the segments from the bytes
	// read back, through the plain (fsync per file) path, which works.
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush retrying segments whose fsync failed: %v", err)
	}
	if !strings.Contains(logs.String(), syscall.EIO.Error()) {
		t.Fatalf("no failed fsync logged:\n%s", logs.String())
	}
	checkAll(t, s, want)
	g.set(true, nil)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	reopenChecked(t, s, dir, cfg, want)
}
