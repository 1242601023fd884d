package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/chunker"
)

// goSource returns paths of files under GOROOT/src, up to limit bytes.
func goSource(t testing.TB, limit int64) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	root := filepath.Join(strings.TrimSpace(string(out)), "src")
	var files []string
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if total >= limit {
			return filepath.SkipAll
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, p)
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total < limit/2 {
		t.Fatalf("only %d bytes of Go source found under %s", total, root)
	}
	return files
}

func putFile(t testing.TB, s *Store, c *chunker.Chunker, path string, buf []byte) ([]chunk.ID, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c.Reset(f) // New allocates the chunker's window: reuse one
	var ids []chunk.ID
	added := 0
	for {
		b, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return ids, added
		}
		if err != nil {
			t.Fatal(err)
		}
		if chunk.IsZero(b) {
			ids = append(ids, chunk.ID{})
			continue
		}
		id, add, err := s.Put(context.Background(), chunk.KindData, b)
		if err != nil {
			t.Fatal(err)
		}
		if add {
			added++
		}
		ids = append(ids, id)
	}
}

func TestRealFiles(t *testing.T) {
	ctx := context.Background()
	files := goSource(t, 40<<20)
	dir, cfg := testRepo(t, 4, 2)
	cfg.SegmentSize = 8 << 20
	s := openStore(t, dir, cfg, Options{})
	buf := make([]byte, 8<<20)
	ck := chunker.New(nil, chunker.Params{})
	chunks := map[string][]chunk.ID{}
	for _, p := range files {
		chunks[p], _ = putFile(t, s, ck, p, buf)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	for _, p := range files {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, id := range chunks[p] {
			b, err := s.Get(ctx, id)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read back %d bytes, want %d", p, len(got), len(want))
		}
	}
	// The same tree again is all duplicates.
	for _, p := range files[:200] {
		if _, added := putFile(t, s, ck, p, buf); added != 0 {
			t.Fatalf("%s: %d chunks stored again", p, added)
		}
	}
}
