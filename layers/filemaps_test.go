package layers

import "testing"

func TestFileMapsBound(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		extents []int // extents per file, added in order
		cached  []Ino // inos cached at the end
		cost    int
	}{
		{"fits", 100, []int{1, 2, 3}, []Ino{1, 2, 3}, 2 + 3 + 4},
		{"oldest go first", 12, []int{2, 2, 2, 2, 2}, []Ino{2, 3, 4, 5}, 4 * 3},
		{"too big for the cache", 20, []int{1, 5, 1}, []Ino{1, 3}, 2 + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFileMaps(tc.max)
			for i, n := range tc.extents {
				c.add(Ino(i+1), fileMap{size: int64(n), es: make([]extent, n)})
			}
			for _, ino := range tc.cached {
				m, ok := c.get(ino)
				if !ok {
					t.Errorf("inode %d not cached", ino)
				} else if m.size != int64(tc.extents[ino-1]) {
					t.Errorf("inode %d: size %d, want %d", ino, m.size, tc.extents[ino-1])
				}
			}
			if len(c.items) != len(tc.cached) || c.size != tc.cost {
				t.Errorf("%d entries costing %d, want %d costing %d", len(c.items), c.size, len(tc.cached), tc.cost)
			}
		})
	}
}
