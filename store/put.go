package store

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/index"
)

// memChunk is a chunk that is not (yet) in the index: being sealed, in the
// open segment, or in a segment being sealed. Fields guarded by Store.mu.
type memChunk struct {
	kind  chunk.Kind
	refs  int64
	seq   uint64  // order of registration, for Flush
	plain []byte  // while the chunk is being sealed; nil once appended
	seg   *segBuf // once appended
	off   int
	n     int
	jRefs int64 // refs as last written to the journal; -1: not journaled
}

// segBuf is a segment until its shard files are written: its bytes, which
// only grow by appending, and what they hold.
type segBuf struct {
	id uint64
	// data holds the bytes (guarded by Store.mu while the segment is
	// open; afterwards only its sealer appends, the trailer).
	data   *segData
	limit  int64      // data.len beyond which the segment is full
	chunks []segChunk // guarded by Store.mu
	repack bool       // written by GC: refs come from the index
	hseq   uint64     // guarded by Store.mu: order of hand-off to the sealers
	done   bool       // guarded by Store.mu: sealed and durable
	failed bool       // guarded by Store.mu: sealing failed, in Store.failed
	// fullLen is the segment's length with its trailer, appended once
	// by the first seal so retries write identical shards; 0 before.
	fullLen int64
	// held: handed off with its data, counted in Store.memSeals.
	held bool // guarded by Store.mu
	// Once the shard files hold the segment its data is freed (nil)
	// and Get reads chunks from the files: segLen is then the
	// segment's length with trailer.
	segLen int64 // guarded by Store.mu
	lost   error // set by the sealer: bytes unrecoverable, retries fail

	jmu      sync.Mutex // guards the journal fields and the journal file
	sealed   bool       // the segment is sealed: journal removed, data freed
	dataGone bool       // the data was freed: the shard files hold the segment
	jf       *os.File
	jOff     int64
	jChunks  int // guarded by Store.mu: chunks written to the journal
}

type segChunk struct {
	id   chunk.ID
	kind chunk.Kind
	off  uint32
	n    uint32
	refs int64 // for replayed segments: refs recorded in the journal
}

// Put stores data as a chunk of kind (unless a chunk with the same id
// exists) and adds one reference to it. It returns before the chunk is
// durable: Flush makes it so. Encryption runs in the background; a full
// disk found while sealing an earlier segment fails later Puts and Flush
// with an error matching ErrNoSpace and syscall.ENOSPC.
func (s *Store) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	if kind != chunk.KindData && kind != chunk.KindMeta {
		return chunk.ID{}, false, fmt.Errorf("put chunk: invalid kind %v", kind)
	}
	if err := ctx.Err(); err != nil {
		return chunk.ID{}, false, err
	}
	id := s.keys.ID(data)
	s.mu.Lock()
	hasFailed := len(s.failed) > 0
	s.mu.Unlock()
	if hasFailed {
		if err := s.retryFailed(ctx); err != nil {
			return id, false, fmt.Errorf("put chunk %s: %w", id.Short(), classify(err))
		}
	}
	if dup, err := s.dedup(id); dup || err != nil {
		return id, false, err
	}
	if kind == chunk.KindData {
		if err := s.checkRoom(ctx, len(data)); err != nil {
			return id, false, fmt.Errorf("put chunk %s: %w", id.Short(), err)
		}
	}
	select {
	case s.workers <- struct{}{}:
	case <-ctx.Done():
		return id, false, ctx.Err()
	}
	s.mu.Lock()
	if dup, err := s.dedupLocked(id); dup || err != nil {
		s.mu.Unlock()
		<-s.workers
		return id, false, err
	}
	m := &memChunk{kind: kind, refs: 1, plain: append(s.chunkBuf(len(data)), data...), jRefs: -1}
	s.putSeq++
	m.seq = s.putSeq
	s.mem[id] = m
	s.inflight[m.seq] = struct{}{}
	s.workWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.workWG.Done()
		defer func() { <-s.workers }()
		plain := m.plain
		// Room for S2's worst case, so Seal does not reallocate.
		sealed := s.keys.Seal(s.chunkBuf(len(plain)+len(plain)/5+crypt.Overhead+1024), plain, id)
		s.appendChunk(id, m, sealed)
		// Both buffers are free now: appendChunk copied sealed and
		// cleared m.plain under the lock (Get clones under it).
		s.putChunkBuf(plain)
		s.putChunkBuf(sealed)
	}()
	return id, true, nil
}

func (s *Store) chunkBuf(n int) []byte {
	if p, ok := s.chunkBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, n)
}

func (s *Store) putChunkBuf(b []byte) {
	s.chunkBufs.Put(&b)
}

func (s *Store) dedup(id chunk.ID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dedupLocked(id)
}

// dedupLocked adds a reference if id is already stored. Called with mu.
func (s *Store) dedupLocked(id chunk.ID) (bool, error) {
	if s.closed {
		return false, ErrClosed
	}
	if m, ok := s.mem[id]; ok {
		s.addRefLocked(m)
		return true, nil
	}
	var found bool
	var c index.Chunk
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		c, found, err = index.GetChunk(txn, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("put chunk %s: %w", id.Short(), err)
	}
	if found && s.lost[c.Segment] {
		return false, nil // store it anew: lost.go
	}
	if found {
		s.deltas[id]++
	}
	return found, nil
}

// addRefLocked adds a reference to a chunk not yet indexed. Called with mu.
func (s *Store) addRefLocked(m *memChunk) {
	m.refs++
	if m.jRefs >= 0 && m.refs > m.jRefs {
		s.raisedJournaled = true
	}
}

// newSegLocked starts an empty segment, holding at most SegmentSize bytes
// unless its first chunk, of minLen, is larger. Called with mu.
func (s *Store) newSegLocked(minLen int) *segBuf {
	seg := &segBuf{id: s.nextSeg, data: newSegData(s.journalDir()), limit: int64(max(s.cfg.SegmentSize, minLen))}
	s.nextSeg++
	return seg
}

// appendChunk adds a sealed chunk to the open segment and hands the segment
// to the sealer when it is full. The hand-off blocks while the sealer is
// busy, which is what bounds memory under a fast producer.
func (s *Store) appendChunk(id chunk.ID, m *memChunk, sealed []byte) {
	var handoff []*segBuf
	s.mu.Lock()
	for s.memSeals >= maxPendingSeals {
		s.cond.Wait()
	}
	if s.open != nil && s.open.data.len+int64(len(sealed)) > s.open.limit {
		handoff = append(handoff, s.open)
		s.open = nil
	}
	if s.open == nil {
		s.open = s.newSegLocked(len(sealed))
	}
	seg := s.open
	off := int(seg.data.len)
	seg.data.append(sealed)
	seg.chunks = append(seg.chunks, segChunk{id: id, kind: m.kind, off: uint32(off), n: uint32(len(sealed))})
	m.seg, m.off, m.n, m.plain = seg, off, len(sealed), nil
	delete(s.inflight, m.seq)
	if seg.data.len >= int64(s.cfg.SegmentSize) || len(seg.chunks) >= maxSegChunks {
		handoff = append(handoff, seg)
		s.open = nil
	}
	for _, h := range handoff {
		s.handOffLocked(h)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// handOffLocked queues a full segment for the sealers. Called with mu,
// after waiting for memSeals < maxPendingSeals.
func (s *Store) handOffLocked(h *segBuf) {
	s.segSeq++
	h.hseq = s.segSeq
	h.held = true
	s.memSeals++
	s.sealing[h] = struct{}{}
	s.sealQ <- h // never blocks: cap(sealQ) > maxPendingSeals+1 >= memSeals
}

// maxPendingSeals bounds segments handed off whose shard files are not
// written yet (queued, or being encoded and written), and sealers is how
// many are encoded and written at once. Fsync holds no scratch file: up to
// maxSyncing segments wait for it while the next ones are written
// (measured: the sealers spent most of their time in fsync, which stalled
// Put when they held the segments).
const (
	maxSyncing = 4
	// maxSegChunks keeps a segment's index records within one badger
	// transaction (about 12k small entries with an 8 MiB memtable), so
	// sealing commits them atomically even for tiny chunks.
	maxSegChunks    = 8192
	maxPendingSeals = 2
	sealers         = 2
)

// sealer seals full segments one at a time in the background.
func (s *Store) sealer() {
	defer s.sealWG.Done()
	for seg := range s.sealQ {
		s.sealStaged(context.Background(), seg)
	}
}

// retryFailed seals again the segments whose sealing failed (for example
// on a full disk that has since been cleared).
func (s *Store) retryFailed(ctx context.Context) error {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	s.mu.Lock()
	failed := append([]*segBuf(nil), s.failed...)
	s.mu.Unlock()
	for _, seg := range failed {
		if err := s.sealSegment(ctx, seg); err != nil {
			s.mu.Lock()
			s.sealErr = err
			s.mu.Unlock()
			return err
		}
		s.mu.Lock()
		seg.failed, seg.done = false, true
		s.cond.Broadcast()
		for i, f := range s.failed {
			if f == seg {
				s.failed = append(s.failed[:i], s.failed[i+1:]...)
				break
			}
		}
		if len(s.failed) == 0 {
			s.sealErr = nil
		}
		s.mu.Unlock()
	}
	return nil
}

// Release drops one reference per occurrence of each id. A chunk whose
// count reaches zero is garbage for GC. Like Put, the change is durable at
// the next Flush.
func (s *Store) Release(ctx context.Context, ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, id := range ids {
		if m, ok := s.mem[id]; ok {
			if m.refs > 0 {
				m.refs--
			} else {
				s.log.Warn("release of unreferenced chunk", "chunk", id.Short())
			}
			continue
		}
		s.deltas[id]--
	}
	return nil
}

// retainBatch is how many ids Retain looks up per hold of mu, which every
// Put and Get also take: the whole extent map of a 100 GiB file (about
// 100k chunks) in one hold would stall them for a noticeable time.
const retainBatch = 1024

// Retain adds one reference per occurrence of each id, as a Put of the
// same data would, without the data: layers uses it for the chunks of a
// file it keeps while that file is rewritten in place. Every id must be
// stored; an unknown one, or one in a lost segment (its data is gone, and
// Put stores such chunks anew), fails with an error matching ErrNotFound
// that names it, and then no reference is added. Like Release, the change
// is durable at the next Flush. Safe for concurrent use.
func (s *Store) Retain(ctx context.Context, ids []chunk.ID) error {
	for done := 0; done < len(ids); {
		if err := ctx.Err(); err != nil {
			s.unretain(ids[:done])
			return err
		}
		part := ids[done:min(done+retainBatch, len(ids))]
		if err := s.retainPart(part); err != nil {
			s.unretain(ids[:done])
			return err
		}
		done += len(part)
	}
	return nil
}

// retainPart is Retain for at most retainBatch ids, all or none, under
// one hold of mu. Chunks move from mem to the index only under mu, so each is
// found in one of the two.
func (s *Store) retainPart(ids []chunk.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var look []chunk.ID
	for _, id := range ids {
		if _, ok := s.mem[id]; !ok {
			look = append(look, id)
		}
	}
	if len(look) > 0 {
		err := s.db.View(func(txn *badger.Txn) error {
			for _, id := range look {
				c, found, err := index.GetChunk(txn, id)
				if err != nil {
					return fmt.Errorf("retain chunk %s: %w", id.Short(), err)
				}
				if !found {
					return fmt.Errorf("retain chunk %s: %w", id.Short(), ErrNotFound)
				}
				if s.lost[c.Segment] {
					return fmt.Errorf("retain chunk %s: segment %016x is lost: %w", id.Short(), c.Segment, ErrNotFound)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, id := range ids {
		if m, ok := s.mem[id]; ok {
			s.addRefLocked(m)
			continue
		}
		s.deltas[id]++
	}
	return nil
}

// unretain takes back what an unfinished Retain added. A chunk sealed
// meanwhile carries its mem references into the index, so Release's
// delta is right for it too.
func (s *Store) unretain(ids []chunk.ID) {
	if len(ids) == 0 {
		return
	}
	if err := s.Release(context.Background(), ids); err != nil {
		s.log.Warn("take back references of a failed retain", "chunks", len(ids), "err", err)
	}
}

// Flush makes every Put and Release that returned before it durable: it
// waits for chunks being sealed, for segments being written, retries
// segments that failed, journals the open segment with fsync and commits
// reference changes to the index.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.flush(ctx, false); err != nil {
		return fmt.Errorf("flush: %w", classify(err))
	}
	return nil
}

// Seal is Flush, except that the open segment is sealed (erasure coded,
// written to the shard dirs and indexed) instead of journaled: everything
// Put and Released before the call is then protected by parity rather than
// held in a single journal file. Call it after a commit; every call that
// has new chunks leaves a small segment, which GC merges later.
func (s *Store) Seal(ctx context.Context) error {
	if err := s.flush(ctx, true); err != nil {
		return fmt.Errorf("seal: %w", classify(err))
	}
	return nil
}

func (s *Store) flush(ctx context.Context, seal bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	// Wait only for work that existed when Flush was called, so a steady
	// stream of Puts from other goroutines cannot starve it.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	target := s.putSeq
	for s.olderInflight(target) {
		s.cond.Wait()
	}
	if seal && s.open != nil && len(s.open.chunks) > 0 {
		// The same bound on segments being written as appendChunk keeps.
		for s.memSeals >= maxPendingSeals {
			s.cond.Wait()
		}
		if h := s.open; h != nil && len(h.chunks) > 0 {
			s.open = nil
			s.handOffLocked(h)
			s.cond.Broadcast()
		}
	}
	segTarget, open := s.segSeq, s.open
	for s.olderSealing(segTarget) {
		s.cond.Wait()
	}
	hasFailed := len(s.failed) > 0
	s.mu.Unlock()
	if hasFailed {
		if err := s.retryFailed(ctx); err != nil {
			return err
		}
	}
	if open != nil {
		if err := s.journalSeg(ctx, open); err != nil {
			return err
		}
	}
	return s.applyDeltas()
}

// olderInflight reports whether a chunk with seq <= target is still being
// sealed. Called with mu; the map holds at most one entry per worker.
func (s *Store) olderInflight(target uint64) bool {
	for seq := range s.inflight {
		if seq <= target {
			return true
		}
	}
	return false
}

// olderSealing reports whether a segment handed off at or before target is
// still being sealed. Called with mu.
func (s *Store) olderSealing(target uint64) bool {
	for seg := range s.sealing {
		if seg.hseq <= target {
			return true
		}
	}
	return false
}

// journalSeg makes the chunks of seg, the open segment when Flush started,
// durable: by journaling it if it is still open, or by waiting for its
// sealing if it has been handed off since.
func (s *Store) journalSeg(ctx context.Context, seg *segBuf) error {
	err := s.journalOpen(seg)
	if err != errHandedOff {
		return err
	}
	s.mu.Lock()
	for !seg.done && !seg.failed {
		s.cond.Wait()
	}
	failed := seg.failed
	s.mu.Unlock()
	if failed {
		return s.retryFailed(ctx)
	}
	return nil
}

// SaveReferences writes the reference changes of the Puts and Releases so
// far to the index, without waiting for the index to reach the disk.
//
// Why: a Put that deduplicates only adds to a count in memory until the
// next Flush, while the metadata naming the chunk (layers' staging
// records) goes to the index within milliseconds. A server killed between
// the two kept the record and lost the reference: the count was one
// short, and once the revisions holding the other references were pruned,
// GC deleted a chunk that the record still named. Metadata writers call
// this before each batch they write to the same index; badger recovers a
// prefix of its writes, so a crash that keeps a batch keeps the counts
// written before it. A count can still end up too high (space, until a
// repair recounts), never too low. One exception makes it a Flush: a
// chunk already journaled but not yet indexed gained a reference (its
// count lives in the journal).
func (s *Store) SaveReferences(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	none, raised, closed := len(s.deltas) == 0, s.raisedJournaled, s.closed
	s.raisedJournaled = false
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if raised {
		// The count of a chunk in the open segment, or in one being
		// sealed, lives in its journal until the seal indexes it: only
		// Flush writes it there (with fsync), or waits for the seal.
		// Rare: the chunk was journaled by an earlier durable point and
		// deduplicated since.
		if err := s.flush(ctx, false); err != nil {
			s.mu.Lock()
			s.raisedJournaled = true
			s.mu.Unlock()
			return fmt.Errorf("save references: %w", classify(err))
		}
		return nil
	}
	if none {
		return nil
	}
	if err := s.writeDeltas(); err != nil {
		return fmt.Errorf("save references: %w", classify(err))
	}
	return nil
}

// applyDeltas commits reference changes of indexed chunks and syncs the
// index.
func (s *Store) applyDeltas() error {
	if err := s.writeDeltas(); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync index: %w", err)
	}
	return nil
}

// writeDeltas writes reference changes of indexed chunks to the index.
func (s *Store) writeDeltas() error {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	s.mu.Lock()
	pending := s.deltas
	s.deltas = map[chunk.ID]int64{}
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	ids := make([]chunk.ID, 0, len(pending))
	for id := range pending {
		ids = append(ids, id)
	}
	requeue := func(rest []chunk.ID) {
		s.mu.Lock()
		for _, id := range rest {
			s.deltas[id] += pending[id]
		}
		s.mu.Unlock()
	}
	// Small transactions, each committed before its ids leave pending,
	// so a failure re-queues exactly what was not applied.
	const per = 1000
	for len(ids) > 0 {
		part := ids[:min(per, len(ids))]
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, id := range part {
				c, found, err := index.GetChunk(txn, id)
				if err != nil {
					return err
				}
				if !found {
					s.log.Warn("reference change for unknown chunk", "chunk", id.Short(), "delta", pending[id])
					continue
				}
				c.Refs += pending[id]
				if c.Refs < 0 {
					s.log.Warn("chunk released more often than referenced", "chunk", id.Short())
					c.Refs = 0
				}
				if err := txn.Set(index.ChunkKey(id), c.Marshal()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			requeue(ids)
			return fmt.Errorf("commit reference counts: %w", err)
		}
		ids = ids[len(part):]
	}
	return nil
}
