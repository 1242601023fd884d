package index

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Why our own table checksums: badger's blocks carry checksums, but its
// iterators end quietly at a block they cannot read, so a damaged table
// made restore leave files out and exit 0. Its own verification at open
// (options.OnTableRead) panics in a goroutine of its own when the damaged
// block also fails to decompress (v4.9.6, Table.VerifyChecksum reads the
// offset of the nil block it got), which we cannot recover from. Tables
// never change once badger has written them, so a CRC of each whole file,
// taken when badger is done with it and checked before badger opens it,
// finds damage at rest without depending on badger's decoding.

// ErrDamaged means a table of the index no longer matches the checksum
// recorded for it.
var ErrDamaged = errors.New("index damaged")

// sumsName is the file in the index directory that holds the checksums.
// Badger ignores files whose names it does not know, and a user who
// removes the index directory removes it too.
const sumsName = "STRATA-SUMS"

const sumsHeader = "strata index table checksums v1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type tableSum struct {
	size int64
	crc  uint32
}

// DamagedError names the tables that fail their checksums.
type DamagedError struct {
	Dir    string
	Tables []string // file names, with what is wrong with each
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("index %s is damaged: %s", e.Dir, strings.Join(e.Tables, "; "))
}

func (e *DamagedError) Unwrap() error { return ErrDamaged }

// VerifyTables checks every table of the index in dir that has a recorded
// checksum, reading the files (not mapping them, so the check costs page
// cache, not the process's memory). Tables without one (new since the
// last record, or a first open) and recorded tables since removed are
// skipped. The error is a *DamagedError when a table does not match.
func VerifyTables(dir string, log *slog.Logger) error {
	sums, err := loadSums(dir)
	if err != nil {
		// A damaged checksum file says nothing about the tables.
		orDiscard(log).Warn("index checksums unreadable; tables not verified", "err", err)
		return nil
	}
	var bad []string
	for _, name := range sortedNames(sums) {
		want := sums[name]
		got, err := sumFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		switch {
		case got.size != want.size:
			bad = append(bad, fmt.Sprintf("%s is %d bytes, was %d", name, got.size, want.size))
		case got.crc != want.crc:
			bad = append(bad, fmt.Sprintf("%s does not match its checksum", name))
		}
	}
	if len(bad) > 0 {
		return &DamagedError{Dir: dir, Tables: bad}
	}
	return nil
}

// RecordTables records checksums of the tables of the closed index in
// dir: after a clean close every table file there is complete. Tables
// already recorded are not read again.
func RecordTables(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("record index checksums: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sst") && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return record(dir, names)
}

// RecordLive records checksums of the tables the open db lists: those
// are complete, where a file in the directory may be a compaction's
// table still being written.
func RecordLive(db *badger.DB) error {
	var names []string
	for _, t := range db.Tables() {
		names = append(names, fmt.Sprintf("%06d.sst", t.ID))
	}
	return record(db.Opts().Dir, names)
}

// record keeps the checksums of names, reusing those already recorded,
// and drops the rest: a table id badger removed may be used again.
func record(dir string, names []string) error {
	old, err := loadSums(dir)
	if err != nil {
		old = nil
	}
	sums := make(map[string]tableSum, len(names))
	for _, name := range names {
		if s, ok := old[name]; ok {
			sums[name] = s
			continue
		}
		s, err := sumFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // compacted away meanwhile
		}
		if err != nil {
			return fmt.Errorf("record index checksums: %w", err)
		}
		sums[name] = s
	}
	if maps.Equal(old, sums) {
		return nil
	}
	return writeSums(dir, sums)
}

func sumFile(path string) (tableSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return tableSum{}, err
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, f)
	if err != nil {
		return tableSum{}, fmt.Errorf("read %s: %w", path, err)
	}
	return tableSum{size: n, crc: h.Sum32()}, nil
}

func sortedNames(sums map[string]tableSum) []string { return slices.Sorted(maps.Keys(sums)) }

// The file is text, a table per line, and ends with a CRC of all before
// it, so a torn or damaged file reads as unreadable, never as wrong sums.
func writeSums(dir string, sums map[string]tableSum) error {
	var b bytes.Buffer
	b.WriteString(sumsHeader + "\n")
	for _, name := range sortedNames(sums) {
		s := sums[name]
		fmt.Fprintf(&b, "%s %d %08x\n", name, s.size, s.crc)
	}
	fmt.Fprintf(&b, "end %08x\n", crc32.Checksum(b.Bytes(), castagnoli))
	tmp := filepath.Join(dir, sumsName+".tmp")
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write index checksums: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, sumsName)); err != nil {
		return fmt.Errorf("write index checksums: %w", err)
	}
	return nil
}

// loadSums reads the checksum file; a missing one is empty.
func loadSums(dir string) (map[string]tableSum, error) {
	data, err := os.ReadFile(filepath.Join(dir, sumsName))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]tableSum{}, nil
	}
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndex(data, []byte("end "))
	if i < 0 {
		return nil, fmt.Errorf("%s: no end line", sumsName)
	}
	want, err := strconv.ParseUint(strings.TrimSpace(string(data[i+4:])), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(data[:i], castagnoli) {
		return nil, fmt.Errorf("%s: checksum mismatch", sumsName)
	}
	sums := map[string]tableSum{}
	sc := bufio.NewScanner(bytes.NewReader(data[:i]))
	for first := true; sc.Scan(); first = false {
		if first {
			if sc.Text() != sumsHeader {
				return nil, fmt.Errorf("%s: unknown header %q", sumsName, sc.Text())
			}
			continue
		}
		var name string
		var s tableSum
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %x", &name, &s.size, &s.crc); err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", sumsName, sc.Text(), err)
		}
		sums[name] = s
	}
	return sums, sc.Err()
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
