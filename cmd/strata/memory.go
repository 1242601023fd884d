package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The Go memory limit a server keeps while its live heap is small, by
// what it serves (server.memoryFloor). The limit trims the garbage on top
// of the live heap, and is cheap only while that heap sits well below it,
// so each floor follows the heap of its kind of server. Measured on the
// benchmark corpus (795 MiB, 68k files) and image (4 GiB, 1.5 GiB of
// data), GOGC 50, badger's block cache at 4 MiB (store/index):
const (
	// memoryFloorExport: NBD exports take bulk writes at disk speed, with
	// a live heap of 84-104 MiB during an nbdcopy of the image. Their peak
	// RSS (154-163 MiB) is the same at 96 MiB as at 128; the copy is not:
	// 6.8 and 7.1 s (8.6 and 9.4 s of server CPU) against 6.4 and 6.6 s
	// (8.2 and 8.3 s).
	memoryFloorExport = 128 << 20
	// memoryFloorStaging: an rsync into a staging mount holds ~40 MiB
	// live (badger's memtable and table builders, a sealer's region and
	// parity, go-fuse's request buffers). The first backup peaked at
	// 160 and 161 MiB at 128 MiB, for 22.1 and 23.0 s of server CPU; at
	// 96 MiB 123-139 MiB (four runs) for 21.2-22.9 s; at 80 MiB 119 and
	// 131 MiB for 22.6 and 24.3 s. (With the block cache at 16 MiB, 96
	// MiB had cost 3% more CPU; on a slower machine, where the server was
	// CPU-bound, 112 MiB had cost 17% more CPU and wall time.) With a busy
	// loop holding one of the two cores, 96 MiB against 128 cost 1%: 26.6
	// and 28.4 s of rsync against 26.3 and 28.1.
	memoryFloorStaging = 96 << 20
	// memoryFloorRead: a server with only read-only mounts holds caches
	// and read buffers (~55 MiB after a cold tar of the benchmark
	// revision: layers' chunk cache 16 MiB, badger's memtable 10, go-fuse's
	// buffers 7). At 80 MiB the cold tar ran as fast as at 96 with the
	// block cache at 16 MiB (5.5 and 5.6 s against 5.6 and 5.2), at a
	// peak RSS of 97 MiB against 113; with that larger cache, 80 MiB had
	// cost 30% more time, and 64 MiB 2.5x.
	memoryFloorRead = 80 << 20
)

// memoryCheck is how often the limit follows the live heap.
const memoryCheck = time.Second

// governMemory sets the server's garbage collector: GOGC 50 and a soft
// memory limit that rises with the live heap (memoryLimit) from the floor
// that floor returns for what the server serves now, until ctx ends. GOGC
// and GOMEMLIMIT in the environment override each part, as for any Go
// program.
func governMemory(ctx context.Context, log *slog.Logger, floor func() int64) {
	if os.Getenv("GOGC") == "" {
		// Go's default lets garbage grow to as much again as the live
		// heap; half as much cost ~10% more CPU and ~70 MiB less peak RSS
		// on an rsync of the Go tree.
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := memoryLimit(0, floor())
	debug.SetMemoryLimit(limit)
	go func() {
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(memoryCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			metrics.Read(live)
			if live[0].Value.Kind() != metrics.KindUint64 {
				return
			}
			if want := memoryLimit(int64(live[0].Value.Uint64()), floor()); want != limit {
				debug.SetMemoryLimit(want)
				log.Debug("memory limit", "limit_mib", want>>20, "live_mib", live[0].Value.Uint64()>>20)
				limit = want
			}
		}
	}()
}

// memoryLimit is the soft limit for a live heap of live bytes above floor. A fixed
// limit below the live heap would make the collector run without pause
// (Go caps it at half the CPU); a heap that outgrows the floor, as a
// repository with a huge tree may, gets a quarter of itself as headroom
// instead, like GOGC 25. Steps of 16 MiB keep the limit from moving on
// every check.
func memoryLimit(live, floor int64) int64 {
	const step = 16 << 20
	want := (live + live/4 + step - 1) / step * step
	return max(floor, want)
}
