package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/shard"
	"github.com/strata-backup/strata/store/shard/shardtest"
)

func faultyBackends(t *testing.T, dir string, n int) ([]shard.Backend, []*shardtest.Faulty) {
	t.Helper()
	var bs []shard.Backend
	var fs []*shardtest.Faulty
	for i := range n {
		l, err := shard.OpenLocal(filepath.Join(dir, "shards", strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f := shardtest.NewFaulty(l)
		bs = append(bs, f)
		fs = append(fs, f)
	}
	return bs, fs
}

func TestNoSpace(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	bs, faults := faultyBackends(t, dir, 3)
	s := openStore(t, dir, cfg, Options{Backends: bs})
	faults[1].LimitSpace(3 << 20) // room for a few 1 MiB segments' shards
	r := rand.New(rand.NewPCG(1, 1))
	want := map[[32]byte][]byte{}
	var putErr error
	for i := 0; i < 200 && putErr == nil; i++ {
		b := randBytes(r, 100_000)
		var id chunk.ID
		id, _, putErr = s.Put(ctx, chunk.KindData, b)
		if putErr == nil {
			want[id] = b
		}
	}
	if putErr == nil {
		putErr = s.Flush(ctx)
	}
	if !errors.Is(putErr, syscall.ENOSPC) || !errors.Is(putErr, ErrNoSpace) {
		t.Fatalf("write on a full shard dir = %v, want ENOSPC and ErrNoSpace", putErr)
	}
	// Everything accepted is still readable while the disk is full.
	checkAll(t, s, want)
	if err := s.Flush(ctx); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Flush while full = %v", err)
	}
	faults[1].LimitSpace(-1) // space freed
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after space was freed: %v", err)
	}
	more := putRandom(t, s, 2, 20, 100_000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	checkAll(t, s, more)
	rep, err := s.Scrub(ctx, ScrubOptions{ReadData: 100})
	if err != nil || len(rep.Damaged) != 0 {
		t.Fatalf("scrub after ENOSPC: %+v, %v", rep, err)
	}
}

// TestTmpfsFull runs a shard dir on a real, tiny tmpfs (root only).
func TestTmpfsFull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Log("not root: tmpfs part covered by TestNoSpace's fault wrapper only")
		return
	}
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	mnt := filepath.Join(dir, "shards", "2")
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		t.Logf("mount tmpfs: %v (skipping the real-filesystem part)", err)
		return
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	s := openStore(t, dir, cfg, Options{})
	r := rand.New(rand.NewPCG(3, 3))
	want := map[[32]byte][]byte{}
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		b := randBytes(r, 200_000)
		var id chunk.ID
		if id, _, err = s.Put(ctx, chunk.KindData, b); err == nil {
			want[id] = b
		}
	}
	if err == nil {
		err = s.Flush(ctx)
	}
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("filling a 2 MiB tmpfs shard dir: %v, want ENOSPC", err)
	}
	checkAll(t, s, want)
	// Data stopped at the reserve (two 1 MiB segments here, plus what
	// was in flight), not at a full disk ...
	st, _ := s.Stats(ctx)
	if st.Free > uint64(s.roomReserve())+2<<20 {
		t.Fatalf("Stats.Free = %d after data filled a 2 MiB shard dir, want the reserve (%d) and at most 2 MiB in flight", st.Free, s.roomReserve())
	}
	// ... so metadata, which is what frees space (prune's records, GC),
	// still goes in and becomes durable.
	meta := randBytes(r, 100_000)
	id, _, err := s.Put(ctx, chunk.KindMeta, meta)
	if err != nil {
		t.Fatalf("metadata put at the reserve: %v", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush of metadata at the reserve: %v", err)
	}
	want[id] = meta
	// Free space: grow the tmpfs; data goes in again.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	b := randBytes(r, 200_000)
	if id, _, err = s.Put(ctx, chunk.KindData, b); err != nil {
		t.Fatalf("data put after growing the filesystem: %v", err)
	}
	want[id] = b
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after growing the filesystem: %v", err)
	}
	checkAll(t, s, want)
}

func TestNoPlaintextOnDisk(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	s := openStore(t, dir, cfg, Options{})
	marker := []byte("STRATA-PLAINTEXT-MARKER-7f3a")
	for i := range 40 {
		b := bytes.Repeat(append(marker, fmt.Sprintf(" line %d\n", i)...), 2000+i)
		if _, _, err := s.Put(ctx, chunk.Kind(1+i%2), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil { // journal holds the open segment
		t.Fatal(err)
	}
	check := func() {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, marker) || bytes.Contains(b, marker[:12]) {
				t.Errorf("plaintext marker found in %s", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check()
	s.Close()
	check()
}

func TestConcurrentPutGet(t *testing.T) {
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	s := openStore(t, dir, cfg, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	all := map[[32]byte][]byte{}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 30 {
				b := randBytes(r, 1+r.IntN(80_000))
				if i%5 == 0 {
					b = []byte("shared chunk") // dedup across goroutines
				}
				id, _, err := s.Put(ctx, chunk.KindData, b)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := s.Get(ctx, id)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("Get right after Put: %v", err)
					return
				}
				if i%10 == 0 {
					if err := s.Flush(ctx); err != nil {
						t.Error(err)
					}
				}
				mu.Lock()
				all[id] = b
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	shared := [32]byte(crypt0(s, []byte("shared chunk")))
	if r := refsOf(t, s, shared); r != 4*6 {
		t.Fatalf("shared chunk refs = %d, want 24", r)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, all)
}

func crypt0(s *Store, b []byte) chunk.ID { return s.keys.ID(b) }

// The crash test re-executes the test binary as a child that puts and
// flushes in a loop, recording each flushed batch in a log file only after
// Flush returned; the parent kills it with SIGKILL at random times, then
// reopens and checks that every logged chunk reads back.
const crashEnv = "STRATA_STORE_CRASH_CHILD"

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		return // only runs as the child of TestKillDuringWrites
	}
	ctx := context.Background()
	cfg := mustLoad(t, dir)
	s, err := Open(ctx, dir, cfg, newKeys(), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashEnv+"_SEED"), 10, 64)
	r := rand.New(rand.NewPCG(seed, 42))
	log, err := os.OpenFile(filepath.Join(dir, "acked.log"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		os.Exit(4)
	}
	for batch := 0; ; batch++ {
		var ids []string
		for range 1 + r.IntN(8) {
			n := 1 + r.IntN(150_000)
			seedB := r.Uint64()
			b := randBytes(rand.New(rand.NewPCG(seedB, uint64(n))), n)
			id, _, err := s.Put(ctx, chunk.KindData, b)
			if err != nil {
				os.Exit(5)
			}
			ids = append(ids, fmt.Sprintf("%s %d %d\n", id, seedB, n))
			if r.IntN(4) == 0 {
				s.Release(ctx, []chunk.ID{id}) // and one more Put below keeps it
				s.Put(ctx, chunk.KindData, b)
			}
		}
		if err := s.Flush(ctx); err != nil {
			os.Exit(6)
		}
		for _, l := range ids {
			log.WriteString(l)
		}
		log.Sync()
	}
}

func TestKillDuringWrites(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		return
	}
	ctx := context.Background()
	dir, cfg := testRepo(t, 4, 2)
	r := rand.New(rand.NewPCG(9, 9))
	for round := range 4 {
		cmd := childTest(t, "TestCrashChild", crashEnv+"="+dir, fmt.Sprintf("%s_SEED=%d", crashEnv, round+1))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+r.IntN(900)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended by itself: %v\n%s", round, err, stderr.String())
		}
		s, err := Open(ctx, dir, cfg, newKeys(), Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		n := verifyAcked(t, s, dir)
		rep, err := s.Scrub(ctx, ScrubOptions{})
		if err != nil || len(rep.Damaged) != 0 {
			t.Fatalf("round %d: scrub after kill: %+v, %v", round, rep, err)
		}
		if _, err := s.GC(ctx, GCOptions{}); err != nil {
			t.Fatalf("round %d: gc after kill: %v", round, err)
		}
		verifyAcked(t, s, dir)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged chunks read back, %d orphans", round, n, len(rep.Orphans))
	}
}

func verifyAcked(t *testing.T, s *Store, dir string) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, "acked.log"))
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		var idHex string
		var seed uint64
		var size int
		if _, err := fmt.Sscanf(string(line), "%s %d %d", &idHex, &seed, &size); err != nil {
			continue // the torn last line of a killed child
		}
		id, err := chunk.ParseID(idHex)
		if err != nil {
			continue
		}
		want := randBytes(rand.New(rand.NewPCG(seed, uint64(size))), size)
		got, err := s.Get(context.Background(), id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("acknowledged chunk %s: %v (equal=%v)", id.Short(), err, bytes.Equal(got, want))
		}
		n++
	}
	return n
}

// TestJournalFull runs the journal on a tiny tmpfs (root only): Flush
// fails with ENOSPC, and succeeds once there is room, with nothing lost.
func TestJournalFull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Log("not root: journal ENOSPC not exercised")
		return
	}
	ctx := context.Background()
	dir, cfg := testRepo(t, 2, 1)
	jdir := filepath.Join(dir, "journal")
	if err := syscall.Mount("tmpfs", jdir, "tmpfs", 0, "size=256k"); err != nil {
		t.Logf("mount tmpfs: %v (skipping)", err)
		return
	}
	t.Cleanup(func() { syscall.Unmount(jdir, syscall.MNT_DETACH) })
	s := openStore(t, dir, cfg, Options{})
	want := putRandom(t, s, 30, 6, 100_000) // under one 1 MiB segment, journaled on Flush
	err := s.Flush(ctx)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Flush with a full journal = %v, want ENOSPC", err)
	}
	checkAll(t, s, want)
	if err := syscall.Mount("tmpfs", jdir, "tmpfs", syscall.MS_REMOUNT, "size=16m"); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after freeing space: %v", err)
	}
	s.Close()
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
}
