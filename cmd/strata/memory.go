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
// parity while a segment is written, go-fuse's request buffers: 35-50 MiB
// in an rsync since filling segments went to scratch files, ~75 before);
// the garbage on top of them is what the limit trims. Measured on the 795
// MiB benchmark corpus (GOGC 50):
//   - live ~100 MiB: peak RSS 228 MiB without a limit, 157 MiB at 128 MiB
//     for 7% more server CPU, 140 MiB at 96 MiB for 26% more;
//   - live ~75 MiB (smaller caches): 96 MiB cost the first backup 20% more
//     server CPU (60.0 and 63.5 s against 50.7 and 50.6 s; 72-78 s against
//     61 s of wall time) for 142-147 MiB of peak RSS against 161;
//   - live ~60 MiB (segments spooled): 112 MiB cost 17% more (63 s of CPU
//     against 54; 74 s of wall time against 63) for 146 MiB against 160.
//
// A bad trade each time while that backup is the slowest thing we do.
const memoryFloor = 128 << 20

// memoryFloorRead is the floor of a server that only serves read-only
// mounts. Its heap is caches and read buffers that allocate little, so a
// tighter limit costs next to no collector time: the benchmark's cold
// reads of a revision ran as fast at 96 MiB (13.1, 14.9 and 15.8 s) as at
// 128 in the next run (13.3 s median), at a peak RSS of 112-115 MiB
// against 145.
const memoryFloorRead = 96 << 20

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
