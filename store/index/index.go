package index

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// Key prefixes.
const (
	ChunkPrefix   = "c/"
	SegmentPrefix = "s/"
	MiscPrefix    = "x/"
)

// NextSegmentKey holds the next segment id to allocate.
var NextSegmentKey = []byte(MiscPrefix + "next-segment")

// ErrWrongKey means the index was encrypted with another key.
var ErrWrongKey = errors.New("index encryption key mismatch (wrong master key for this repository)")

// ErrCorrupt means a record could not be decoded.
var ErrCorrupt = errors.New("index record corrupt")

// Open opens (creating if needed) the badger database in dir, encrypted
// with key (32 bytes).
// Tables that no longer match their recorded checksums make it fail with
// a *DamagedError (VerifyTables) before badger reads them.
func Open(dir string, key []byte, log *slog.Logger) (*badger.DB, error) {
	if err := VerifyTables(dir, log); err != nil {
		return nil, err // names the directory
	}
	db, err := OpenOptions(Options(dir, key, log))
	if err != nil {
		return nil, err
	}
	// Tables new since the last clean close (a crash) get checksums now.
	if err := RecordLive(db); err != nil {
		orDiscard(log).Warn("index checksums not recorded", "err", err)
	}
	return db, nil
}

// Options returns the badger options Open uses, for callers that measure
// what they cost (store/internal/idxrss) or change them.
func Options(dir string, key []byte, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(logger{orDiscard(log)}).
		WithEncryptionKey(key).
		// 8 MiB index cache and 4 MiB block cache: the store's hot
		// set is small records; badger's 256 MiB default block cache
		// would dominate the process's memory. The whole index of the
		// 795 MiB benchmark corpus (68k files) is 17 MiB of tables.
		// A full 16 MiB block cache was a quarter of a revision
		// server's live heap (17.6 of 68 MiB after a cold tar of that
		// corpus); at 4 MiB, with the servers' memory floors lowered
		// to match (cmd/strata/memory.go), the cold tar ran as fast
		// (5.3 s either way), a no-change rsync as fast (median of 8
		// passes 1.37 s against 1.49), 4 KiB random NBD reads as fast
		// (57k IOPS against 53k). The one cost seen: nbdcopy out of a
		// 4 GiB block revision, 1.65-1.87 s against 1.42-1.44.
		WithIndexCacheSize(8 << 20).
		WithBlockCacheSize(4 << 20).
		WithMemTableSize(8 << 20).
		// 1 MiB tables, not badger's 2: a compaction runs several
		// table builders at once, each holding about twice its table
		// (encrypted blocks beside plain ones), and the compaction
		// after the benchmark's first backup (layers' tidier) set the
		// server's peak RSS: 142 and 148 MiB, against 151-165 with
		// 2 MiB tables.
		WithBaseTableSize(1 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithSyncWrites(false)
}

// OpenOptions is Open with the given options (from Options).
func OpenOptions(opts badger.Options) (*badger.DB, error) {
	db, err := badger.Open(opts)
	if err != nil {
		if isKeyMismatch(err) {
			return nil, fmt.Errorf("open index %s: %w", opts.Dir, ErrWrongKey)
		}
		return nil, fmt.Errorf("open index %s: %w", opts.Dir, err)
	}
	return db, nil
}

// isKeyMismatch tells badger's wrong-key error, which its y.Wrap does
// not keep matchable by errors.Is.
func isKeyMismatch(err error) bool {
	return errors.Is(err, badger.ErrEncryptionKeyMismatch) || strings.Contains(err.Error(), badger.ErrEncryptionKeyMismatch.Error())
}

type logger struct{ l *slog.Logger }

func (l logger) Errorf(f string, a ...any) {
	l.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l logger) Warningf(f string, a ...any) {
	msg := "badger: " + strings.TrimSpace(fmt.Sprintf(f, a...))
	if cacheReport(msg) {
		// The block cache is small on purpose (Options); badger
		// says so, with a histogram, every minute of a busy server.
		l.l.Debug(msg)
		return
	}
	l.l.Warn(msg)
}

// cacheReport tells badger's periodic block-cache statistics from real
// warnings.
func cacheReport(msg string) bool {
	return strings.HasPrefix(msg, "badger: Block cache might be too small") ||
		strings.HasPrefix(msg, "badger: Cache life expectancy")
}
func (l logger) Infof(f string, a ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}
func (l logger) Debugf(f string, a ...any) {}

// Chunk is where a chunk lives and how many references it has.
type Chunk struct {
	Segment uint64
	Offset  uint32 // in the segment
	Length  uint32 // sealed length
	Kind    chunk.Kind
	Refs    int64
}

// ChunkKey returns the key of chunk id.
func ChunkKey(id chunk.ID) []byte {
	k := make([]byte, len(ChunkPrefix)+len(id))
	copy(k, ChunkPrefix)
	copy(k[len(ChunkPrefix):], id[:])
	return k
}

// ChunkIDFromKey extracts the id from a chunk key.
func ChunkIDFromKey(k []byte) (chunk.ID, bool) {
	var id chunk.ID
	if len(k) != len(ChunkPrefix)+len(id) || string(k[:len(ChunkPrefix)]) != ChunkPrefix {
		return id, false
	}
	copy(id[:], k[len(ChunkPrefix):])
	return id, true
}

// Marshal encodes c.
func (c Chunk) Marshal() []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, c.Segment)
	b = binary.BigEndian.AppendUint32(b, c.Offset)
	b = binary.BigEndian.AppendUint32(b, c.Length)
	b = append(b, byte(c.Kind))
	return binary.AppendVarint(b, c.Refs)
}

// ParseChunk decodes a Chunk record.
func ParseChunk(b []byte) (Chunk, error) {
	if len(b) < 18 {
		return Chunk{}, fmt.Errorf("chunk record of %d bytes: %w", len(b), ErrCorrupt)
	}
	c := Chunk{
		Segment: binary.BigEndian.Uint64(b),
		Offset:  binary.BigEndian.Uint32(b[8:]),
		Length:  binary.BigEndian.Uint32(b[12:]),
		Kind:    chunk.Kind(b[16]),
	}
	refs, n := binary.Varint(b[17:])
	if n <= 0 {
		return Chunk{}, fmt.Errorf("chunk record refs: %w", ErrCorrupt)
	}
	c.Refs = refs
	return c, nil
}

// Segment describes a sealed segment.
type Segment struct {
	SegLen int64 // bytes in the segment (chunks and trailer)
	K, M   int
	Chunks int
}

// SegmentKey returns the key of segment id.
func SegmentKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(SegmentPrefix), id)
}

// SegmentIDFromKey extracts the id from a segment key.
func SegmentIDFromKey(k []byte) (uint64, bool) {
	if len(k) != len(SegmentPrefix)+8 || string(k[:len(SegmentPrefix)]) != SegmentPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(SegmentPrefix):]), true
}

// Marshal encodes s.
func (s Segment) Marshal() []byte {
	b := make([]byte, 0, 20)
	b = binary.BigEndian.AppendUint64(b, uint64(s.SegLen))
	b = binary.BigEndian.AppendUint16(b, uint16(s.K))
	b = binary.BigEndian.AppendUint16(b, uint16(s.M))
	return binary.BigEndian.AppendUint32(b, uint32(s.Chunks))
}

// ParseSegment decodes a Segment record.
func ParseSegment(b []byte) (Segment, error) {
	if len(b) != 16 {
		return Segment{}, fmt.Errorf("segment record of %d bytes: %w", len(b), ErrCorrupt)
	}
	return Segment{
		SegLen: int64(binary.BigEndian.Uint64(b)),
		K:      int(binary.BigEndian.Uint16(b[8:])),
		M:      int(binary.BigEndian.Uint16(b[10:])),
		Chunks: int(binary.BigEndian.Uint32(b[12:])),
	}, nil
}

// GetChunk reads the record of id; found is false if there is none.
func GetChunk(txn *badger.Txn, id chunk.ID) (c Chunk, found bool, err error) {
	item, err := txn.Get(ChunkKey(id))
	if err == badger.ErrKeyNotFound {
		return Chunk{}, false, nil
	}
	if err != nil {
		return Chunk{}, false, fmt.Errorf("index get chunk %s: %w", id.Short(), err)
	}
	err = item.Value(func(v []byte) error {
		c, err = ParseChunk(v)
		return err
	})
	if err != nil {
		return Chunk{}, false, fmt.Errorf("index chunk %s: %w", id.Short(), err)
	}
	return c, true, nil
}

// GetSegment reads the record of segment id; found is false if none.
func GetSegment(txn *badger.Txn, id uint64) (s Segment, found bool, err error) {
	item, err := txn.Get(SegmentKey(id))
	if err == badger.ErrKeyNotFound {
		return Segment{}, false, nil
	}
	if err != nil {
		return Segment{}, false, fmt.Errorf("index get segment %016x: %w", id, err)
	}
	err = item.Value(func(v []byte) error {
		s, err = ParseSegment(v)
		return err
	})
	if err != nil {
		return Segment{}, false, fmt.Errorf("index segment %016x: %w", id, err)
	}
	return s, true, nil
}

// Batch applies many small writes, committing whenever a transaction grows
// too big, so callers need not size their transactions. Use it only where
// the writes need not be atomic as a whole.
type Batch struct {
	db  *badger.DB
	txn *badger.Txn
}

// NewBatch starts a batch.
func NewBatch(db *badger.DB) *Batch { return &Batch{db: db, txn: db.NewTransaction(true)} }

// Txn returns the current transaction, for reads.
func (b *Batch) Txn() *badger.Txn { return b.txn }

// Set writes key → value.
func (b *Batch) Set(key, value []byte) error {
	return b.do(func(t *badger.Txn) error { return t.Set(key, value) })
}

// Delete removes key.
func (b *Batch) Delete(key []byte) error {
	return b.do(func(t *badger.Txn) error { return t.Delete(key) })
}

func (b *Batch) do(op func(*badger.Txn) error) error {
	err := op(b.txn)
	if err == badger.ErrTxnTooBig {
		if err := b.txn.Commit(); err != nil {
			return fmt.Errorf("index commit: %w", err)
		}
		b.txn = b.db.NewTransaction(true)
		err = op(b.txn)
	}
	if err != nil {
		return fmt.Errorf("index write: %w", err)
	}
	return nil
}

// Commit commits what is left.
func (b *Batch) Commit() error {
	if err := b.txn.Commit(); err != nil {
		return fmt.Errorf("index commit: %w", err)
	}
	return nil
}

// Discard abandons uncommitted writes.
func (b *Batch) Discard() { b.txn.Discard() }
