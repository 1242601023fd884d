package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/erasure"
	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/index"
	"github.com/strata-backup/strata/store/shard"
)

// Options tune Open. The zero value is usable.
type Options struct {
	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil means time.Now
	// Backends replaces the shard directories of the config with these
	// backends (one per shard index), e.g. fault-injecting wrappers in
	// tests. nil opens a shard.Local per configured directory.
	Backends []shard.Backend
	// Describe, if set, says what a chunk holds (for example "vm@3
	// disk.img 4 GiB–4.01 GiB"), so damage reports name what is affected
	// rather than only chunk ids: DamageError.What and
	// SegmentDamage.Affected. It is called without store locks held, from
	// Get's and Scrub's goroutines, so it must be safe for concurrent use;
	// it may read DB() and should be quick; "" means unknown.
	Describe func(chunk.ID) string
	// Workers is how many chunks are sealed (hashed, compressed,
	// encrypted) in parallel behind Put; zero means GOMAXPROCS+1.
	Workers int
	// SetAsideDamagedIndex: when the index fails its checksums
	// (index.ErrDamaged), rename it to index.damaged-TIME and start an
	// empty one, for RebuildIndex to fill from the shards. Without it
	// Open returns the error.
	SetAsideDamagedIndex bool
}

// Store is an open repository's extent store. It is safe for concurrent
// use; one process holds it at a time (REPO/lock).
type Store struct {
	dir      string
	cfg      format.Config
	keys     *crypt.Keys
	log      *slog.Logger
	now      func() time.Time
	describe func(chunk.ID) string // nil: none
	db       *badger.DB
	backends []shard.Backend
	coder    *erasure.Coder
	lockFile *os.File
	k, m     int

	workers   chan struct{} // semaphore: chunk seals in flight
	chunkBufs sync.Pool     // *[]byte: chunk-sized scratch for Put
	room      room          // free space last measured (checkRoom)
	sealQ     chan *segBuf  // full segments to the sealer goroutine
	syncSlots chan struct{} // semaphore: segments waiting for fsync
	sealWG    sync.WaitGroup
	workWG    sync.WaitGroup

	dirSync   *groupSync // shard dir fsyncs shared by concurrent sealers
	indexSync *groupSync // index fsyncs shared by concurrent sealers

	flushMu sync.Mutex // serializes Flush
	maintMu sync.Mutex // serializes Scrub, GC and RebuildIndex
	idxMu   sync.Mutex // serializes read-modify-write of chunk records
	retryMu sync.Mutex // serializes retries of failed seals

	mu   sync.Mutex
	cond *sync.Cond // on mu: inflight, sealing or failed changed
	// Fields below are guarded by mu.
	mem    map[chunk.ID]*memChunk // chunks not (yet) in the index
	deltas map[chunk.ID]int64     // reference changes of indexed chunks, applied at Flush
	// raisedJournaled: a chunk the journal holds gained a reference since
	// its journal record, which only a Flush writes (SaveReferences).
	raisedJournaled bool
	open            *segBuf              // segment being filled
	failed          []*segBuf            // segments whose sealing failed, retried by Put and Flush
	sealErr         error                // the last sealing error while failed is non-empty
	putSeq          uint64               // numbers new chunks, so Flush waits only for older ones
	inflight        map[uint64]struct{}  // seqs of chunks being sealed, not yet in a segment
	segSeq          uint64               // numbers hand-offs to the sealers
	sealing         map[*segBuf]struct{} // segments handed to the sealers, not yet done
	memSeals        int                  // of those, how many still hold their data
	nextSeg         uint64
	closed          bool
	damaged         map[uint64]bool // segments already reported damaged by reads
	lost            map[uint64]bool // segments damaged beyond parity (lost.go)
	stats           Stats
}

// Create makes a new repository in dir: shard directories (which must be
// new or empty), the journal directory and the config. The index is created
// on first Open (it needs the key). Zero config fields get defaults; an
// empty ID gets a random one.
func Create(ctx context.Context, dir string, cfg format.Config) error {
	cfg = cfg.WithDefaults()
	if cfg.ID == "" {
		var b [16]byte
		rand.Read(b[:])
		cfg.ID = hex.EncodeToString(b[:])
	}
	if cfg.Created.IsZero() {
		cfg.Created = time.Now().UTC()
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("create repository %s: %w", dir, err)
	}
	if _, err := format.Load(dir); err == nil {
		return fmt.Errorf("create repository %s: a repository already exists there", dir)
	} else if !errors.Is(err, format.ErrNotRepository) {
		return fmt.Errorf("create repository %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create repository: %w", err)
	}
	for i, p := range cfg.ShardPaths(dir) {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("create shard dir %d: %w", i, err)
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return fmt.Errorf("create shard dir %d: %w", i, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("create repository: shard dir %d (%s) is not empty", i, p)
		}
	}
	for _, sub := range []string{"journal", "index"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("create repository: %w", err)
		}
	}
	return format.Save(dir, cfg)
}

// Open opens the repository in dir with its config and keys, takes the
// repository lock (*LockedError if another process holds it), checks the
// shard directories (*ShardDirError), opens the index and seals any
// segment a crash left in the journal.
func Open(ctx context.Context, dir string, cfg format.Config, keys *crypt.Keys, opts Options) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	s := &Store{
		dir:      dir,
		cfg:      cfg,
		keys:     keys,
		log:      opts.Logger,
		now:      opts.Now,
		describe: opts.Describe,
		k:        cfg.DataShards,
		m:        cfg.ParityShards,
		mem:      map[chunk.ID]*memChunk{},
		inflight: map[uint64]struct{}{},
		sealing:  map[*segBuf]struct{}{},
		deltas:   map[chunk.ID]int64{},
		damaged:  map[uint64]bool{},
	}
	s.cond = sync.NewCond(&s.mu)
	s.dirSync = newGroupSync(s.syncShardDirs)
	s.indexSync = newGroupSync(func(context.Context) error { return s.db.Sync() })
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.coder, err = erasure.New(s.k, s.m); err != nil {
		return nil, err
	}
	if s.lockFile, err = lockRepo(dir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			if s.db != nil {
				s.db.Close()
			}
			unlockRepo(s.lockFile)
		}
	}()
	if err := s.openBackends(ctx, opts.Backends); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.journalDir(), 0o700); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := removeSpools(s.journalDir()); err != nil {
		return nil, err
	}
	idxDir := filepath.Join(dir, "index")
	s.db, err = index.Open(idxDir, keys.IndexKey(), s.log)
	if errors.Is(err, index.ErrDamaged) && opts.SetAsideDamagedIndex {
		// Under the repository lock, so no other process has it open.
		aside := fmt.Sprintf("%s.damaged-%s", idxDir, s.now().UTC().Format("20060102T150405"))
		if rerr := os.Rename(idxDir, aside); rerr != nil {
			return nil, fmt.Errorf("set the damaged index aside: %w (%w)", rerr, err)
		}
		s.log.Warn("damaged index set aside; a new one is built from the shards", "kept", aside, "damage", err)
		s.db, err = index.Open(idxDir, keys.IndexKey(), s.log)
	}
	if err != nil {
		return nil, err
	}
	if err := s.loadState(); err != nil {
		return nil, err
	}
	// Never reuse ids of segments already in the shard dirs: a lost
	// index, or shard files a crash left before their segment was
	// indexed (a new segment under the same id could keep a stale shard
	// file where its own write failed; RebuildIndex would find both).
	if err := s.skipExistingSegments(ctx); err != nil {
		return nil, err
	}
	n := opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0) + 1
	}
	s.workers = make(chan struct{}, n)
	s.sealQ = make(chan *segBuf, maxPendingSeals+2)
	s.syncSlots = make(chan struct{}, maxSyncing)
	if err := s.replayJournals(ctx); err != nil {
		return nil, err
	}
	for range sealers {
		s.sealWG.Add(1)
		go s.sealer()
	}
	ok = true
	return s, nil
}

func (s *Store) openBackends(ctx context.Context, given []shard.Backend) error {
	n := s.k + s.m
	if given != nil {
		if len(given) != n {
			return fmt.Errorf("open repository: %d backends for %d+%d shards", len(given), s.k, s.m)
		}
		s.backends = given
		return nil
	}
	s.backends = make([]shard.Backend, n)
	var bad []*ShardDirError
	for i, p := range s.cfg.ShardPaths(s.dir) {
		slot, err := openSlot(ctx, i, p)
		if err != nil {
			bad = append(bad, err)
		}
		s.backends[i] = slot
	}
	if len(bad) > s.m {
		return bad[0]
	}
	for _, e := range bad {
		// Degraded, like a RAID with a dead disk: reads reconstruct,
		// writes skip the dir, scrub --repair rebuilds it.
		s.log.Warn("shard dir missing or unusable: running degraded, redundancy reduced until `strata scrub --repair`",
			"shard", e.Index, "dir", e.Dir, "err", e.Err)
	}
	return nil
}

func (s *Store) skipExistingSegments(ctx context.Context) error {
	for i, b := range s.backends {
		err := b.List(ctx, func(info shard.Info) error {
			if id, ok := parseSegName(info.Name); ok && id >= s.nextSeg {
				s.nextSeg = id + 1
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list shard dir %d: %w", i, err)
		}
	}
	return nil
}

func (s *Store) journalDir() string { return filepath.Join(s.dir, "journal") }

// loadState reads the next segment id and the counters behind Stats.
func (s *Store) loadState() error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(index.NextSegmentKey)
		switch {
		case err == badger.ErrKeyNotFound:
			s.nextSeg = 1
		case err != nil:
			return fmt.Errorf("read next segment id: %w", err)
		default:
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("next segment id: %w", index.ErrCorrupt)
				}
				s.nextSeg = beUint64(v)
				return nil
			}); err != nil {
				return err
			}
		}
		st, err := s.countIndex(txn)
		if err != nil {
			return err
		}
		s.stats = st
		return s.loadLost(txn)
	})
}

// recountStats recomputes the index-derived counters of Stats after the
// index was rewritten (rebuild, reference counts), keeping the counters
// that only live in memory.
func (s *Store) recountStats() error {
	return s.db.View(func(txn *badger.Txn) error {
		st, err := s.countIndex(txn)
		s.mu.Lock()
		st.DegradedReads = s.stats.DegradedReads
		s.stats = st
		s.mu.Unlock()
		return err
	})
}

// countIndex computes the index-derived counters of Stats.
func (s *Store) countIndex(txn *badger.Txn) (Stats, error) {
	var st Stats
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(index.SegmentPrefix), PrefetchValues: true, PrefetchSize: 64})
	for it.Rewind(); it.Valid(); it.Next() {
		id, _ := index.SegmentIDFromKey(it.Item().Key())
		err := it.Item().Value(func(v []byte) error {
			seg, err := index.ParseSegment(v)
			if err != nil {
				return err
			}
			st.Segments++
			st.SegmentBytes += seg.SegLen
			st.ShardBytes += int64(seg.K+seg.M) * erasure.FileSize(erasure.ShardLen(seg.SegLen, seg.K))
			return nil
		})
		if err != nil {
			it.Close()
			return st, fmt.Errorf("segment %016x: %w", id, err)
		}
		if id >= s.nextSeg {
			s.nextSeg = id + 1
		}
	}
	it.Close()
	it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte(index.ChunkPrefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		st.Chunks++
	}
	return st, nil
}

// DB returns the index database, shared with layers (keys "l/").
func (s *Store) DB() *badger.DB { return s.db }

// Config returns the repository config the store was opened with.
func (s *Store) Config() format.Config { return s.cfg }

// Close flushes, stops the background sealer, closes the index and
// releases the lock. The store is unusable afterwards even if Close fails.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.mu.Unlock()
	ferr := s.Flush(context.Background())
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.workWG.Wait()
	close(s.sealQ)
	s.sealWG.Wait()
	s.mu.Lock()
	// The open segment is in its journal (Flush above), a failed one
	// lost with the error Flush returned: their scratch files can go.
	for _, seg := range append(s.failed, s.open) {
		if seg != nil && seg.data != nil {
			seg.data.close()
		}
	}
	s.mu.Unlock()
	derr := s.db.Close()
	if derr == nil {
		// Before the lock goes: the next opener verifies against these.
		derr = index.RecordTables(filepath.Join(s.dir, "index"))
	}
	lerr := unlockRepo(s.lockFile)
	if ferr != nil {
		return fmt.Errorf("close store: %w", ferr)
	}
	if derr != nil {
		return fmt.Errorf("close index: %w", derr)
	}
	return lerr
}
