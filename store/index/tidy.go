package index

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// TidyMax is the largest index Tidy compacts: compacting into one level
// rewrites every table, which for an index this size takes about a
// second of one core in the background (the 795 MiB benchmark corpus,
// 68k files, makes 17 MiB).
const TidyMax = 128 << 20

// Tidy compacts db into a single LSM level when its tables total at most
// TidyMax bytes and lie in more than one level. It reports whether it
// compacted. (Level-0 tables alone stay: badger's Flatten leaves them
// until there are as many as its own compaction waits for.)
//
// Why: every iterator seek and every point lookup that misses visits a
// table in each level, and every one of level 0's, whose tables overlap.
// Badger leaves a freshly written index in several (after the first
// backup of the benchmark corpus: three level-0 tables and five below),
// and reads of staging and of revisions seek all the time (layers keeps
// each record's versions under their own keys). Compacted to one level,
// a no-change rsync into staging took 35-43% less server user CPU, in
// passes of the same server before and after.
func Tidy(db *badger.DB) (bool, error) {
	if !needsTidy(db.Levels(), TidyMax) {
		return false, nil
	}
	// One worker: this runs beside the user's next job, and the index
	// is small by the check above.
	if err := db.Flatten(1); err != nil {
		return false, fmt.Errorf("compact index: %w", err)
	}
	if err := RecordLive(db); err != nil {
		return true, err
	}
	return true, nil
}

// needsTidy is Tidy's decision for an LSM tree of these levels.
func needsTidy(levels []badger.LevelInfo, max int64) bool {
	used := 0
	var size int64
	for _, l := range levels {
		if l.NumTables > 0 {
			used++
			size += l.Size
		}
	}
	return used > 1 && size <= max
}
