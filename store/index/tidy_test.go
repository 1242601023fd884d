package index

import (
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func TestNeedsTidy(t *testing.T) {
	lv := func(level, tables int, size int64) badger.LevelInfo {
		return badger.LevelInfo{Level: level, NumTables: tables, Size: size}
	}
	tests := []struct {
		name   string
		levels []badger.LevelInfo
		want   bool
	}{
		{"empty", []badger.LevelInfo{lv(0, 0, 0), lv(6, 0, 0)}, false},
		{"one table", []badger.LevelInfo{lv(0, 1, 2<<20), lv(6, 0, 0)}, false},
		{"bottom level only", []badger.LevelInfo{lv(0, 0, 0), lv(5, 0, 0), lv(6, 8, 16<<20)}, false},
		{"level 0 only", []badger.LevelInfo{lv(0, 3, 6<<20), lv(6, 0, 0)}, false},
		{"level 0 and one below", []badger.LevelInfo{lv(0, 3, 6<<20), lv(6, 5, 10<<20)}, true},
		{"two levels below", []badger.LevelInfo{lv(0, 0, 0), lv(5, 3, 6<<20), lv(6, 6, 12<<20)}, true},
		{"too large", []badger.LevelInfo{lv(0, 3, 6<<20), lv(6, 80, 160<<20)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needsTidy(tt.levels, 128<<20); got != tt.want {
				t.Errorf("needsTidy = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTidy writes an index that badger leaves over several levels (small
// memtables and tables), then checks Tidy leaves one level and every key.
func TestTidy(t *testing.T) {
	opts := Options(t.TempDir(), make([]byte, 32), nil).
		WithMemTableSize(1 << 20).WithValueThreshold(1 << 10).
		WithBaseTableSize(256 << 10).WithBaseLevelSize(1 << 20)
	db, err := OpenOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Write until badger has compacted some tables below level 0 and
	// new ones arrived on top: the shape a backup leaves.
	val := make([]byte, 100)
	n := 0
	for batch := 0; !needsTidy(db.Levels(), TidyMax); batch++ {
		if batch == 400 {
			t.Fatalf("index still in one level after %d keys; the test no longer sets up its case", n)
		}
		wb := db.NewWriteBatch()
		for range 1000 {
			// Keys spread over the key space, as inode records are.
			if err := wb.Set([]byte(fmt.Sprintf("k/%08d", (n*7919)%1000003)), val); err != nil {
				t.Fatal(err)
			}
			n++
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // let badger's compactor run
	}
	levels := func() map[int]int {
		m := map[int]int{}
		for _, ti := range db.Tables() {
			m[ti.Level]++
		}
		return m
	}
	before := levels()
	did, err := Tidy(db)
	if err != nil || !did {
		t.Fatalf("Tidy = %v, %v", did, err)
	}
	after := levels()
	t.Logf("levels before %v, after %v", before, after)
	if len(after) != 1 || after[0] > 1 {
		t.Errorf("levels after Tidy: %v (before %v), want one level", after, before)
	}
	if did, err := Tidy(db); err != nil || did {
		t.Errorf("second Tidy = %v, %v; want nothing to do", did, err)
	}
	err = db.View(func(txn *badger.Txn) error {
		for i := 0; i < n; i++ {
			if _, err := txn.Get([]byte(fmt.Sprintf("k/%08d", (i*7919)%1000003))); err != nil {
				return fmt.Errorf("key %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
