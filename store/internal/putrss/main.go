// Command putrss puts a stream of unique 1 MiB chunks (random or text-like)
// into a fresh 4+2 repository and prints throughput and the process's peak
// RSS (getrusage), to show that memory stays bounded however much is put.
// Then, in the same run, it writes the same bytes to plain files, to show
// the disk's ceiling: once as one file (fsync at the end), once 1.5× the
// bytes as one file (what 4+2 shards amount to), and once 1.5× the bytes
// as 8 MiB files, six written at a time, each fsynced and evicted from the
// page cache, as the store's shard writes are.
//
//	go run ./store/internal/putrss -size 4GiB -dir /var/tmp/putrss
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

func main() {
	size := flag.String("size", "4GiB", "bytes to put (suffix KiB, MiB, GiB)")
	dir := flag.String("dir", "", "repository directory (default: a temporary one, removed afterwards)")
	text := flag.Bool("text", false, "compressible text-like data instead of random")
	plain := flag.Bool("plain", true, "also measure plain-file writes of the same bytes")
	flag.Parse()
	if err := run(*size, *dir, *text, *plain); err != nil {
		fmt.Fprintln(os.Stderr, "putrss:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func run(sizeArg, dir string, text, plain bool) error {
	ctx := context.Background()
	total, err := parseSize(sizeArg)
	if err != nil {
		return fmt.Errorf("size %q: %w", sizeArg, err)
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "putrss-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	repo := filepath.Join(dir, "repo")
	if err := store.Create(ctx, repo, format.Config{}); err != nil {
		return err
	}
	cfg, err := format.Load(repo)
	if err != nil {
		return err
	}
	s, err := store.Open(ctx, repo, cfg, crypt.NewKeys([32]byte{1}), store.Options{})
	if err != nil {
		return err
	}
	const chunkSize = 1 << 20
	pool := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"strata ", "segment ", "chunk ", "backup ", "revision ", "layer ", "the ", "of ", "and ", "\n"}
	for i := 0; i < len(pool); {
		if text {
			i += copy(pool[i:], words[r.IntN(len(words))])
		} else {
			binary.LittleEndian.PutUint64(pool[i:], r.Uint64())
			i += 8
		}
	}
	buf := make([]byte, chunkSize)
	start := time.Now()
	n := total / chunkSize
	for i := range n {
		off := (i * 4099 * 16) % int64(len(pool)-chunkSize)
		copy(buf, pool[off:off+chunkSize])
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if _, _, err := s.Put(ctx, chunk.KindData, buf); err != nil {
			return err
		}
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	el := time.Since(start)
	if err := s.Close(); err != nil {
		return err
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	storeMB := float64(n*chunkSize) / el.Seconds() / 1e6
	fmt.Printf("put %d MiB in %.1fs: %.0f MB/s; peak RSS %d MiB\n", n, el.Seconds(), storeMB, ru.Maxrss/1024)
	if !plain {
		return nil
	}
	for _, c := range []struct {
		what   string
		factor float64 // bytes written per byte put
		pieces int64   // 0: one file
	}{
		{"plain file, same bytes, fsync at end", 1, 0},
		{"plain file, 1.5x the bytes, fsync at end", 1.5, 0},
		{"6 writers of 8 MiB files, 1.5x, fsync+evict", 1.5, 8 << 20},
	} {
		mb, err := plainWrite(filepath.Join(dir, "plain"), pool, int64(float64(n*chunkSize)*c.factor), c.pieces)
		if err != nil {
			return err
		}
		// What the write rate means in bytes put at 4+2, and the store's
		// share of that ceiling.
		fmt.Printf("%-48s %4.0f MB/s written = %4.0f MB/s put; store/this %.2f\n", c.what+":", mb, mb/c.factor, storeMB/(mb/c.factor))
	}
	return nil
}

// plainWrite writes total bytes cut from pool in 1 MiB writes, to one file
// (pieces 0) or, split among six writers at once like a 4+2 segment's
// shards, to files of pieces bytes each written, fsynced and evicted from
// the page cache in turn; it returns MB/s.
func plainWrite(dir string, pool []byte, total, pieces int64) (float64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	if pieces == 0 {
		if err := writeFiles(dir, "f", pool, total, 0); err != nil {
			return 0, err
		}
	} else {
		const writers = 6
		var g errgroup.Group
		for i := range writers {
			g.Go(func() error { return writeFiles(dir, strconv.Itoa(i), pool, total/writers, pieces) })
		}
		if err := g.Wait(); err != nil {
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds() / 1e6, nil
}

func writeFiles(dir, prefix string, pool []byte, total, pieces int64) error {
	const w = 1 << 20
	var f *os.File
	closeFile := func() error {
		if f == nil {
			return nil
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if pieces > 0 {
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		err := f.Close()
		f = nil
		return err
	}
	for off := int64(0); off < total; off += w {
		if f == nil || (pieces > 0 && off%pieces == 0) {
			if err := closeFile(); err != nil {
				return err
			}
			var err error
			if f, err = os.Create(filepath.Join(dir, prefix+"-"+strconv.FormatInt(off, 10))); err != nil {
				return err
			}
		}
		p := (off / w * 4099 * 16) % int64(len(pool)-w)
		if _, err := f.Write(pool[p : p+w]); err != nil {
			return err
		}
	}
	return closeFile()
}
