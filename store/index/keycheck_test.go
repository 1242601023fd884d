package index

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

func TestCheckKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	key := bytes.Repeat([]byte{7}, 32)
	if err := CheckKey(dir, key); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("no index yet: err = %v, want ErrNoIndex", err)
	}
	db, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	// While the database is open, as under a running server.
	tests := []struct {
		name string
		key  []byte
		want error
	}{
		{"right key", key, nil},
		{"wrong key", bytes.Repeat([]byte{8}, 32), ErrWrongKey},
	}
	for _, tt := range tests {
		if err := CheckKey(dir, tt.key); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	db.Close()
	if err := CheckKey(dir, key); err != nil {
		t.Errorf("after close: %v", err)
	}
}
