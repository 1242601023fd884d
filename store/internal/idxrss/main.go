// Command idxrss measures how much memory the store's badger index costs:
// it opens an index with the store's options (index.Options, some of which
// flags override), writes n chunk records the way sealing does (one
// transaction per segment of -batch chunks, then a sync), optionally reads
// records back at random, and prints the process's peak and current RSS
// split into anonymous memory (Go heap: memtable arenas, caches) and
// file-backed mappings by badger file kind (.mem write-ahead logs, .vlog,
// .sst), from /proc/self/smaps. The process does nothing else, so the
// figures are badger's plus the Go runtime's few MiB.
//
//	go run ./store/internal/idxrss -n 100000
//	go run ./store/internal/idxrss -n 1000000 -memtables 2 -memtable 8
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/index"
)

func main() {
	n := flag.Int("n", 100_000, "chunk records to write")
	batch := flag.Int("batch", 32, "chunk records per transaction (a segment's worth)")
	reads := flag.Int("reads", 100_000, "random point reads after the writes")
	memtable := flag.Int("memtable", 0, "memtable size in MiB (0: the store's)")
	memtables := flag.Int("memtables", 0, "number of memtables (0: the store's)")
	blockCache := flag.Int("blockcache", -1, "block cache in MiB (-1: the store's)")
	indexCache := flag.Int("indexcache", -1, "index cache in MiB (-1: the store's)")
	dir := flag.String("dir", "", "database directory (default: a temporary one, removed afterwards)")
	memprofile := flag.String("memprofile", "", "write a heap profile (in use after the writes) here")
	flag.Parse()
	profile = *memprofile
	if err := run(*n, *batch, *reads, *memtable, *memtables, *blockCache, *indexCache, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "idxrss:", err)
		os.Exit(1)
	}
}

func run(n, batch, reads, memtable, memtables, blockCache, indexCache int, dir string) error {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "idxrss-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	opts := index.Options(dir, make([]byte, 32), nil)
	if memtable > 0 {
		opts = opts.WithMemTableSize(int64(memtable) << 20)
	}
	if memtables > 0 {
		opts = opts.WithNumMemtables(memtables)
	}
	if blockCache >= 0 {
		opts = opts.WithBlockCacheSize(int64(blockCache) << 20)
	}
	if indexCache >= 0 {
		opts = opts.WithIndexCacheSize(int64(indexCache) << 20)
	}
	report("before open", dir)
	db, err := index.OpenOptions(opts)
	if err != nil {
		return err
	}
	report("opened", dir)
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]chunk.ID, n)
	start := time.Now()
	for i := 0; i < n; i += batch {
		txn := db.NewTransaction(true)
		for j := i; j < min(i+batch, n); j++ {
			for k := range ids[j] {
				ids[j][k] = byte(r.Uint32())
			}
			rec := index.Chunk{Segment: uint64(i / batch), Offset: uint32(j-i) << 20, Length: 1 << 20, Kind: chunk.KindData, Refs: 1}
			if err := txn.Set(index.ChunkKey(ids[j]), rec.Marshal()); err != nil {
				return err
			}
		}
		seg := index.Segment{SegLen: 32 << 20, K: 4, M: 2, Chunks: batch}
		if err := txn.Set(index.SegmentKey(uint64(i/batch)), seg.Marshal()); err != nil {
			return err
		}
		if err := txn.Commit(); err != nil {
			return err
		}
	}
	if err := db.Sync(); err != nil {
		return err
	}
	fmt.Printf("wrote %d records in %.1fs\n", n, time.Since(start).Seconds())
	report("written", dir)
	if profile != "" {
		if err := writeHeapProfile(profile); err != nil {
			return err
		}
	}
	start = time.Now()
	err = db.View(func(txn *badger.Txn) error {
		for range reads {
			if _, found, err := index.GetChunk(txn, ids[r.IntN(n)]); err != nil || !found {
				return fmt.Errorf("read back: found %v, %v", found, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("read %d records in %.1fs\n", reads, time.Since(start).Seconds())
	report("read", dir)
	if err := db.Close(); err != nil {
		return err
	}
	return nil
}

var profile string // flag -memprofile

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

// report prints peak and current RSS and where the current RSS is.
func report(when, dir string) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status := readKV("/proc/self/status")
	byKind := map[string]int64{}
	var anon int64
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		fmt.Println(when, err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	kind := ""
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") || strings.Contains(fields[0], "-") {
			// A mapping header: address range, perms, offset, dev, inode, path.
			kind = ""
			if len(fields) >= 6 && strings.HasPrefix(fields[5], dir) {
				kind = filepath.Ext(fields[5])
			}
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Rss:":
			if kind != "" {
				byKind[kind] += kb
			}
		case "Anonymous:":
			anon += kb
		}
	}
	var files []string
	for k, v := range byKind {
		files = append(files, fmt.Sprintf("%s %d", k, v/1024))
	}
	fmt.Printf("%-12s peak RSS %4d MiB, RSS %4d MiB: anonymous %4d MiB (Go heap in use %d MiB), badger file mappings [%s] MiB\n",
		when+":", status["VmHWM"]/1024, status["VmRSS"]/1024, anon/1024, ms.HeapInuse>>20, strings.Join(files, ", "))
}

func readKV(path string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) > 0 {
			out[k], _ = strconv.ParseInt(fs[0], 10, 64)
		}
	}
	return out
}
