package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor, want int64
	}{
		{0, 96 * mib, 96 * mib},
		{45 * mib, 96 * mib, 96 * mib},  // the benchmark's backup: the floor binds
		{76 * mib, 96 * mib, 96 * mib},  // 1.25× rounds up to the floor exactly
		{77 * mib, 96 * mib, 112 * mib}, // above it the limit follows the heap
		{400 * mib, 96 * mib, 512 * mib},
		{401 * mib, 96 * mib, 512 * mib},
		{410 * mib, 96 * mib, 528 * mib},
		{0, 80 * mib, 80 * mib},
		{64 * mib, 80 * mib, 80 * mib},
		{65 * mib, 80 * mib, 96 * mib},
	} {
		if got := memoryLimit(c.live, c.floor); got != c.want {
			t.Errorf("memoryLimit(%d MiB, floor %d MiB) = %d MiB, want %d MiB", c.live/mib, c.floor/mib, got/mib, c.want/mib)
		}
		if got := memoryLimit(c.live, c.floor); got < c.live+c.live/4 {
			t.Errorf("memoryLimit(%d MiB, floor %d MiB) = %d MiB leaves less than a quarter of headroom", c.live/mib, c.floor/mib, got/mib)
		}
	}
}

// TestServerMemoryFloor: the memory floor follows what the server serves.
func TestServerMemoryFloor(t *testing.T) {
	for _, c := range []struct {
		name   string
		mounts []bool // ReadOnly of each mount
		nbd    bool
		want   int64
	}{
		{"idle", nil, false, memoryFloorRead},
		{"revision mounts", []bool{true, true}, false, memoryFloorRead},
		{"a staging mount among them", []bool{true, false}, false, memoryFloorStaging},
		{"an NBD export", nil, true, memoryFloorExport},
		{"an NBD export and a staging mount", []bool{false}, true, memoryFloorExport},
	} {
		s := &server{mounts: map[string]*mountEntry{}, nbds: map[string]*nbdEntry{}}
		for i, ro := range c.mounts {
			s.mounts[string(rune('a'+i))] = &mountEntry{mountInfo: mountInfo{ReadOnly: ro}}
		}
		if c.nbd {
			s.nbds["unix:/x"] = &nbdEntry{}
		}
		if got := s.memoryFloor(); got != c.want {
			t.Errorf("%s: memoryFloor() = %d MiB, want %d MiB", c.name, got>>20, c.want>>20)
		}
	}
}
