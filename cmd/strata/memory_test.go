package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor, want int64
	}{
		{0, memoryFloor, memoryFloor},
		{75 * mib, memoryFloor, memoryFloor},  // the benchmark's backup peak: the floor binds
		{102 * mib, memoryFloor, memoryFloor}, // 1.25× rounds up to the floor exactly
		{103 * mib, memoryFloor, 144 * mib},   // above it the limit follows the heap
		{400 * mib, memoryFloor, 512 * mib},
		{401 * mib, memoryFloor, 512 * mib},
		{410 * mib, memoryFloor, 528 * mib},
		{0, memoryFloorRead, memoryFloorRead},
		{76 * mib, memoryFloorRead, memoryFloorRead},
		{77 * mib, memoryFloorRead, 112 * mib},
	} {
		if got := memoryLimit(c.live, c.floor); got != c.want {
			t.Errorf("memoryLimit(%d MiB, floor %d MiB) = %d MiB, want %d MiB", c.live/mib, c.floor/mib, got/mib, c.want/mib)
		}
		if got := memoryLimit(c.live, c.floor); got < c.live+c.live/4 {
			t.Errorf("memoryLimit(%d MiB, floor %d MiB) = %d MiB leaves less than a quarter of headroom", c.live/mib, c.floor/mib, got/mib)
		}
	}
}

// TestServerWriting: the memory floor follows what the server serves.
func TestServerWriting(t *testing.T) {
	for _, c := range []struct {
		name   string
		mounts []bool // ReadOnly of each mount
		nbd    bool
		want   bool
	}{
		{"idle", nil, false, false},
		{"revision mounts", []bool{true, true}, false, false},
		{"a staging mount among them", []bool{true, false}, false, true},
		{"an NBD export", nil, true, true},
	} {
		s := &server{mounts: map[string]*mountEntry{}, nbds: map[string]*nbdEntry{}}
		for i, ro := range c.mounts {
			s.mounts[string(rune('a'+i))] = &mountEntry{mountInfo: mountInfo{ReadOnly: ro}}
		}
		if c.nbd {
			s.nbds["unix:/x"] = &nbdEntry{}
		}
		if got := s.writing(); got != c.want {
			t.Errorf("%s: writing() = %v, want %v", c.name, got, c.want)
		}
	}
}
