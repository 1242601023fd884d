package store

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/shard"
)

// Benchmarks run the store at its defaults (4+2, 32 MiB segments) with
// 1 MiB chunks, one stream, and measure a plain file doing the same I/O in
// the same run; see README.md in this directory for figures.

const benchChunk = 1 << 20

// benchPool returns 64 MiB of random or text data to cut chunks from.
func benchPool(b *testing.B, kind string) []byte {
	b.Helper()
	if kind == "random" {
		return randBytes(rand.New(rand.NewPCG(1, 2)), 64<<20)
	}
	var pool []byte
	for _, p := range goSource(b, 64<<20) {
		t, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		pool = append(pool, t...)
	}
	return pool
}

// benchChunkData fills buf with chunk i: a slice of the pool made unique by
// a counter, so nothing deduplicates.
func benchChunkData(pool, buf []byte, i int) {
	off := (i * 4099 * 16) % (len(pool) - benchChunk)
	copy(buf, pool[off:off+benchChunk])
	binary.LittleEndian.PutUint64(buf, uint64(i))
	binary.LittleEndian.PutUint64(buf[benchChunk/2:], uint64(i))
}

func benchRepo(b *testing.B) (string, format.Config) {
	b.Helper()
	dir := b.TempDir()
	if err := Create(context.Background(), dir, format.Config{}); err != nil {
		b.Fatal(err)
	}
	return dir, mustLoad(b, dir)
}

// plainWrite writes n chunks to a plain file with fsync at the end, as the
// baseline for Put; it returns MB/s.
func plainWrite(b *testing.B, pool []byte, n int) float64 {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "plain"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, benchChunk)
	start := time.Now()
	for i := range n {
		benchChunkData(pool, buf, i)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(n*benchChunk) / time.Since(start).Seconds() / 1e6
}

func BenchmarkPut(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			pool := benchPool(b, kind)
			dir, cfg := benchRepo(b)
			s := openStore(b, dir, cfg, Options{})
			buf := make([]byte, benchChunk)
			b.SetBytes(benchChunk)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				benchChunkData(pool, buf, i)
				if _, _, err := s.Put(ctx, chunk.KindData, buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			storeMB := float64(b.N*benchChunk) / time.Since(start).Seconds() / 1e6
			b.StopTimer()
			fileMB := plainWrite(b, pool, b.N)
			b.ReportMetric(storeMB, "store-MB/s")
			b.ReportMetric(fileMB, "file-MB/s")
			b.ReportMetric(storeMB/fileMB, "ratio")
		})
	}
}

// getSetup stores n chunks, reopens the store and writes the same bytes
// to a plain file.
func getSetup(b *testing.B, kind string, n int) (*Store, []chunk.ID, *os.File, string, format.Config) {
	b.Helper()
	ctx := context.Background()
	pool := benchPool(b, kind)
	dir, cfg := benchRepo(b)
	s := openStore(b, dir, cfg, Options{})
	buf := make([]byte, benchChunk)
	ids := make([]chunk.ID, n)
	f, err := os.Create(filepath.Join(b.TempDir(), "plain"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	for i := range n {
		benchChunkData(pool, buf, i)
		if ids[i], _, err = s.Put(ctx, chunk.KindData, buf); err != nil {
			b.Fatal(err)
		}
		f.Write(buf)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return s, ids, f, dir, cfg
}

// benchGet reads chunks back after a Close and reopen. Shard files leave
// the page cache once durable (shard.Local), so with warm set one
// untimed pass reads every chunk first, and the timed reads measure the
// read path (decrypt, decompress, reconstruct) as the plain file's
// ReadAt does from the page cache; without it every chunk is read once,
// from disk, against the plain file evicted from the cache too.
func benchGet(b *testing.B, kind string, lose []int, warm bool) {
	ctx := context.Background()
	n := 256
	if !warm {
		n = max(b.N, 1)
	}
	_, ids, f, dir, cfg := getSetup(b, kind, n)
	for _, i := range lose {
		os.RemoveAll(filepath.Join(dir, "shards", string(rune('0'+i))))
		os.Mkdir(filepath.Join(dir, "shards", string(rune('0'+i))), 0o700)
	}
	s := openStore(b, dir, cfg, Options{})
	buf := make([]byte, benchChunk)
	if warm {
		for i := range n {
			if _, err := s.Get(ctx, ids[i]); err != nil {
				b.Fatal(err)
			}
			if _, err := f.ReadAt(buf, int64(i)*benchChunk); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	b.SetBytes(benchChunk)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := s.Get(ctx, ids[i%n]); err != nil {
			b.Fatal(err)
		}
	}
	storeMB := float64(b.N*benchChunk) / time.Since(start).Seconds() / 1e6
	b.StopTimer()
	start = time.Now()
	for i := range b.N {
		if _, err := f.ReadAt(buf, int64(i%n)*benchChunk); err != nil {
			b.Fatal(err)
		}
	}
	fileMB := float64(b.N*benchChunk) / time.Since(start).Seconds() / 1e6
	b.ReportMetric(storeMB, "store-MB/s")
	b.ReportMetric(fileMB, "file-MB/s")
	b.ReportMetric(storeMB/fileMB, "ratio")
}

func BenchmarkGet(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) { benchGet(b, kind, nil, true) })
	}
}

// BenchmarkGetCold reads each chunk once, from disk.
func BenchmarkGetCold(b *testing.B) {
	b.Run("random", func(b *testing.B) { benchGet(b, "random", nil, false) })
}

// BenchmarkGetDegraded reads with two data shard dirs emptied, so every
// chunk on shards 0 and 1 is reconstructed from the other four.
func BenchmarkGetDegraded(b *testing.B) {
	b.Run("random", func(b *testing.B) { benchGet(b, "random", []int{0, 1}, true) })
}

// discard is a shard backend that drops writes (a Batcher, so shard
// files are not joined into one buffer), to measure the Put pipeline (hash, compress, encrypt, erasure code, checksum) without disk.
type discard struct{ shard.Backend }

func (discard) Put(context.Context, string, []byte) error          { return nil }
func (discard) PutBatch(context.Context, string, ...[]byte) error  { return nil }
func (discard) SyncBatch(context.Context) error                    { return nil }
func (discard) List(context.Context, func(shard.Info) error) error { return nil }

// BenchmarkPutNoDisk is BenchmarkPut/random with shard writes discarded:
// the CPU-bound ceiling of the pipeline on this machine.
func BenchmarkPutNoDisk(b *testing.B) {
	ctx := context.Background()
	pool := benchPool(b, "random")
	dir, cfg := benchRepo(b)
	bs := make([]shard.Backend, cfg.DataShards+cfg.ParityShards)
	for i := range bs {
		bs[i] = discard{}
	}
	s := openStore(b, dir, cfg, Options{Backends: bs})
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		benchChunkData(pool, buf, i)
		if _, _, err := s.Put(ctx, chunk.KindData, buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*benchChunk)/time.Since(start).Seconds()/1e6, "store-MB/s")
}
