package layers_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

// BenchmarkPruneGC removes half of 100 revisions of a changing tree and
// collects the garbage, over the real store, for two repository sizes with
// the same changes: prune and GC should cost about the same for both,
// since their work grows with what was removed, not with what is kept.
//
//	go test -run '^$' -bench PruneGC -benchtime 1x ./layers/
func BenchmarkPruneGC(b *testing.B) {
	for _, files := range []int{500, 5000} {
		b.Run(fmt.Sprintf("base=%dfiles", files), func(b *testing.B) {
			for range b.N {
				benchPruneGC(b, files)
			}
		})
	}
}

func benchPruneGC(b *testing.B, baseFiles int) {
	ctx := context.Background()
	b.StopTimer()
	dir, cfg := newStoreDir(b, format.Config{DataShards: 4, ParityShards: 2})
	s, err := store.Open(ctx, dir, cfg, crypt.NewKeys([32]byte{1}), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r, err := layers.Open(ctx, s.DB(), s, layers.Options{SpoolDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if _, err := r.CreateVolume(ctx, "v", layers.VolumeSpec{Type: layers.TypeFS}); err != nil {
		b.Fatal(err)
	}
	st, err := r.Staging(ctx, "v")
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	write := func(name string, size int) {
		a, err := st.Tree().Lookup(ctx, layers.RootIno, name)
		if err != nil {
			a, err = st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
			if err != nil {
				b.Fatal(err)
			}
		}
		p := make([]byte, size)
		rng.Read(p)
		if _, err := st.WriteAt(ctx, a.Ino, p, 0); err != nil {
			b.Fatal(err)
		}
		if err := st.FlushFile(ctx, a.Ino, false); err != nil {
			b.Fatal(err)
		}
	}
	// The base: files every revision keeps.
	for i := range baseFiles {
		write(fmt.Sprintf("base%05d", i), 8<<10+rng.Intn(56<<10))
	}
	// 100 revisions, each rewriting 10 files of 256 KiB.
	var ids []string
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for rev := range 100 {
		for j := range 10 {
			write(fmt.Sprintf("changing%02d", j), 256<<10)
		}
		rv, err := r.Commit(ctx, "v", layers.CommitOptions{Time: start.Add(time.Duration(rev) * time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, rv.ID)
	}
	if err := s.Seal(ctx); err != nil {
		b.Fatal(err)
	}
	before := shardBytes(dir)

	b.StartTimer()
	t0 := time.Now()
	for i := 0; i < 100; i += 2 {
		if err := r.RemoveRevision(ctx, "v", ids[i]); err != nil {
			b.Fatal(err)
		}
	}
	tPrune := time.Since(t0)
	t1 := time.Now()
	gc, err := s.GC(ctx, store.GCOptions{MaxUnused: 0.05})
	if err != nil {
		b.Fatal(err)
	}
	tGC := time.Since(t1)
	b.StopTimer()

	after := shardBytes(dir)
	b.ReportMetric(tPrune.Seconds()*1000, "prune-ms")
	b.ReportMetric(tGC.Seconds()*1000, "gc-ms")
	b.ReportMetric(float64(before-after)/(1<<20), "freed-MiB")
	b.ReportMetric(float64(before)/(1<<20), "repo-MiB")
	b.ReportMetric(float64(peakRSS())/1024, "peakRSS-MiB")
	if gc.BytesFreed <= 0 {
		b.Fatalf("GC freed nothing: %+v", gc)
	}
}

func shardBytes(dir string) int64 {
	var n int64
	filepath.Walk(filepath.Join(dir, "shards"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// peakRSS is the process's peak resident set in KiB.
func peakRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Maxrss
}
