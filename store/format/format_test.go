package format

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	c := Config{ID: "r1", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Chunker: ChunkerParams{Min: 1, Avg: 2, Max: 3}}.WithDefaults()
	if err := Save(dir, c); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || !got.Created.Equal(c.Created) || got.DataShards != 4 || got.ParityShards != 2 || got.SegmentSize != DefaultSegmentSize || got.Chunker != c.Chunker {
		t.Fatalf("got %+v, want %+v", got, c)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		check   func(error) bool
	}{
		{"missing", "", func(err error) bool { return errors.Is(err, ErrNotRepository) }},
		{"newer", `{"version": 99}`, func(err error) bool {
			var v *VersionError
			return errors.As(err, &v) && v.Found == 99
		}},
		{"garbage", `{`, func(err error) bool { return err != nil && !errors.Is(err, ErrNotRepository) }},
		{"bad layout", `{"version":1,"data_shards":0,"segment_size":1048576}`, func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(dir)
			if !tt.check(err) {
				t.Fatalf("Load(%q) = %v", tt.content, err)
			}
		})
	}
}

func TestShardPaths(t *testing.T) {
	c := Config{DataShards: 2, ParityShards: 1}
	got := c.ShardPaths("/r")
	want := []string{"/r/shards/0", "/r/shards/1", "/r/shards/2"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	c.ShardDirs = []string{"/a", "b", "/c"}
	got = c.ShardPaths("/r")
	want = []string{"/a", "/r/b", "/c"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
