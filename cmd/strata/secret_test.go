package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The server's passphrase cache: known hashes pass while the key ring is
// unchanged, a change of the ring makes them unknown, and a hash the
// client checked itself is known from then on.
func TestCredCache(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(keys, old, old)
	started, other := credHash([]byte("started with")), credHash([]byte("another entry's"))
	c := newCredCache(dir, started)
	steps := []struct {
		name    string
		touch   bool // the ring changes before this step
		hash    string
		checked bool
		want    bool
	}{
		{"the server's own", false, started, false, true},
		{"unknown", false, other, false, false},
		{"checked by the client", false, other, true, true},
		{"known since", false, other, false, true},
		{"own, after the ring changed", true, started, false, false},
		{"learned, after the ring changed", false, other, false, false},
	}
	for _, s := range steps {
		if s.touch {
			now := time.Now()
			os.Chtimes(keys, now, now)
		}
		if got := c.accept(s.hash, s.checked); got != s.want {
			t.Errorf("%s: accept = %v, want %v", s.name, got, s.want)
		}
	}
}
