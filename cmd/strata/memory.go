package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// memoryFloor is the Go memory limit a server that takes writes keeps
// while its live heap is small. A backup server's heap is mostly buffers
// (badger's memtable, caches and table builders, a sealer's region and
// parity while a segment is written, go-fuse's request buffers: ~40 MiB
// in an rsync); the garbage on top of them is what the limit trims. The
// limit is cheap only while the live heap sits well below it, so the two
// move together. Measured on the 795 MiB benchmark corpus (GOGC 50), the
// first backup into staging and its commit, peak RSS and server CPU:
//   - with badger's block cache at 4 MiB (store/index): a 128 MiB limit
//     160 and 161 MiB for 22.1 and 23.0 s of CPU; 96 MiB 123-139 MiB for
//     21.2-22.9 s (four runs); 80 MiB 119 and 131 MiB for 22.6 and 24.3 s;
//   - with it at 16 MiB (live ~55 MiB): 128 MiB 155-158 MiB, 96 MiB
//     142-152 MiB for 3% more CPU; on a slower machine, where the server
//     was CPU-bound, 112 MiB cost 17% more CPU and wall time.
const memoryFloor = 96 << 20

// memoryFloorRead is the floor of a server that only serves read-only
// mounts. Its heap is caches and read buffers (~55 MiB after a cold tar
// of the benchmark revision: layers' chunk cache 16 MiB, badger's
// memtable 10, go-fuse's buffers 7). At 80 MiB the cold tar ran as fast
// as at 96 with the block cache at 16 MiB (5.5 and 5.6 s against 5.6 and
// 5.2), at a peak RSS of 97 MiB against 113; with that larger cache, 80
// MiB had cost 30% more time, and 64 MiB 2.5x.
const memoryFloorRead = 80 << 20

// memoryCheck is how often the limit follows the live heap.
const memoryCheck = time.Second

// governMemory sets the server's garbage collector: GOGC 50 and a soft
// memory limit that rises with the live heap (memoryLimit) from a floor,
// memoryFloor while writing says the server takes writes and
// memoryFloorRead otherwise, until ctx ends. GOGC and GOMEMLIMIT in the
// environment override each part, as for any Go program.
func governMemory(ctx context.Context, log *slog.Logger, writing func() bool) {
	if os.Getenv("GOGC") == "" {
		// Go's default lets garbage grow to as much again as the live
		// heap; half as much cost ~10% more CPU and ~70 MiB less peak RSS
		// on an rsync of the Go tree.
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	floor := func() int64 {
		if writing() {
			return memoryFloor
		}
		return memoryFloorRead
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
