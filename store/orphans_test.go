package store

import "testing"

// TestOrphanSetSuspect: GC deletes orphans only when they look like what
// an interrupted write leaves.
func TestOrphanSetSuspect(t *testing.T) {
	few := maxSyncing + maxPendingSeals + 1
	ids := func(n int) []uint64 { return make([]uint64, n) }
	for _, c := range []struct {
		name    string
		o       orphanSet
		suspect bool
	}{
		{"none", orphanSet{indexed: 10}, false},
		{"none, empty index", orphanSet{}, false},
		{"an interrupted write's", orphanSet{ids: ids(few), indexed: 10}, false},
		{"more than a write leaves", orphanSet{ids: ids(few + 1), indexed: 1000}, true},
		{"index knows no segment", orphanSet{ids: ids(1)}, true},
	} {
		if got := c.o.suspect(); got != c.suspect {
			t.Errorf("%s: suspect %v, want %v", c.name, got, c.suspect)
		}
	}
}
