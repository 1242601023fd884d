// Command putrss puts a stream of unique 1 MiB chunks (random or text-like)
// into a fresh 4+2 repository and prints throughput and the process's peak
// RSS (getrusage), to show that memory stays bounded however much is put.
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

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

func main() {
	size := flag.String("size", "4GiB", "bytes to put (suffix KiB, MiB, GiB)")
	dir := flag.String("dir", "", "repository directory (default: a temporary one, removed afterwards)")
	text := flag.Bool("text", false, "compressible text-like data instead of random")
	flag.Parse()
	if err := run(*size, *dir, *text); err != nil {
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

func run(sizeArg, dir string, text bool) error {
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
	fmt.Printf("put %d MiB in %.1fs: %.0f MB/s; peak RSS %d MiB\n", n, el.Seconds(), float64(n*chunkSize)/el.Seconds()/1e6, ru.Maxrss/1024)
	return nil
}
