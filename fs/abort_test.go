package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// TestConnAndAbort: a mount knows its FUSE connection (the one the mount
// table names, whose readahead was raised to 1 MiB), and aborting it
// fails the next access with ENOTCONN instead of waiting on the server.
func TestConnAndAbort(t *testing.T) {
	m, dir := mountStagingOpts(t, "c", func(r *layers.Repo) Options { return testOpts(t, r) })
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	conn := m.Conn()
	if got, err := ConnAt(dir); err != nil || got != conn || conn == 0 {
		t.Fatalf("ConnAt = %d, %v; Mount.Conn = %d", got, err, conn)
	}
	ra, err := os.ReadFile(m.dev.readaheadPath())
	if err != nil || strings.TrimSpace(string(ra)) != "1024" {
		t.Errorf("read_ahead_kb of connection %d: %q, %v; want 1024", conn, ra, err)
	}
	if err := AbortConn(conn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, "f")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("read after abort: %v, want ENOTCONN", err)
	}
	if _, err := ConnAt(t.TempDir()); !errors.Is(err, ErrMountpoint) {
		t.Errorf("ConnAt of a plain directory: %v, want ErrMountpoint", err)
	}
}
