package index

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestVerifyTables(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		damaged bool
	}{
		{"untouched", func(*testing.T, string) {}, false},
		{"flipped byte", func(t *testing.T, dir string) { rewrite(t, filepath.Join(dir, "000002.sst"), 10, 'X') }, true},
		{"truncated", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, "000001.sst"), 10) }, true},
		// Badger reports a missing table itself (its MANIFEST lists it).
		{"removed", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "000001.sst")) }, false},
		// The checksums only check; damage to them says nothing of the
		// tables.
		{"damaged checksum file", func(t *testing.T, dir string) { rewrite(t, filepath.Join(dir, sumsName), 40, '9') }, false},
		{"new table", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "000003.sst"), []byte("new"), 0o600) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "000001.sst"), make([]byte, 4096), 0o600)
			os.WriteFile(filepath.Join(dir, "000002.sst"), []byte("some table bytes, long enough to damage one in the middle of them all"), 0o600)
			if err := RecordTables(dir); err != nil {
				t.Fatal(err)
			}
			c.damage(t, dir)
			err := VerifyTables(dir, nil)
			var de *DamagedError
			if got := errors.As(err, &de); got != c.damaged || (err != nil && !got) {
				t.Fatalf("VerifyTables: %v, want damaged=%v", err, c.damaged)
			}
			if c.damaged && !errors.Is(err, ErrDamaged) {
				t.Fatalf("%v is not ErrDamaged", err)
			}
		})
	}
}

// A table id badger deleted can come back with other contents: record
// must forget tables that are gone.
func TestRecordForgetsRemovedTables(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "000001.sst")
	os.WriteFile(p, []byte("first table"), 0o600)
	if err := RecordTables(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	if err := RecordTables(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("another table under the same id"), 0o600)
	if err := VerifyTables(dir, nil); err != nil {
		t.Fatalf("a new table under a removed table's id: %v", err)
	}
}

func rewrite(t *testing.T, path string, off int64, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, off); err != nil {
		t.Fatal(err)
	}
}
