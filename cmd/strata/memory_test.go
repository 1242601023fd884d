package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, want int64
	}{
		{0, memoryFloor},
		{75 * mib, memoryFloor},  // the benchmark's peak: the floor binds
		{102 * mib, memoryFloor}, // 1.25× rounds up to the floor exactly
		{103 * mib, 144 * mib},   // above it the limit follows the heap
		{400 * mib, 512 * mib},
		{401 * mib, 512 * mib},
		{410 * mib, 528 * mib},
	} {
		if got := memoryLimit(c.live); got != c.want {
			t.Errorf("memoryLimit(%d MiB) = %d MiB, want %d MiB", c.live/mib, got/mib, c.want/mib)
		}
		if got := memoryLimit(c.live); got < c.live+c.live/4 {
			t.Errorf("memoryLimit(%d MiB) = %d MiB leaves less than a quarter of headroom", c.live/mib, got/mib)
		}
	}
}
