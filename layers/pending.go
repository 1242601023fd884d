package layers

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// pending holds the staging layer's metadata writes that are not yet in
// badger. A badger transaction per FUSE request cost more than the request
// itself (a commit is two goroutine handoffs plus a WAL append), and rsync
// makes about six changing requests per file; so mutations land here, in
// memory, and a background flush writes them in one transaction per batch.
//
// Reads look here before badger (rtx). Writes are applied whole, in
// mutation order, and a batch goes to badger in one transaction, so what
// badger holds after a crash is always a prefix of the mutations: each
// change atomic, as before. Durability points (fsync, Sync, Commit, Close)
// flush first.
//
// A reader must not see a batch leave memory between its look here and its
// badger read with a snapshot older than the batch's commit: readers hold
// mu shared while they read, and a batch leaves memory only under mu
// exclusively, together with the snapshot being replaced by one taken
// after the commit. Readers share that one read-only snapshot (badger
// serves concurrent reads of a read-only transaction): opening one per
// request cost as much as the reads.
type pending struct {
	db *badger.DB

	mu       sync.RWMutex
	snap     *badger.Txn // read-only, newer than every batch no longer in memory
	snapAt   time.Time
	closed   bool                  // the volume was removed or the repository closed
	itMu     sync.Mutex            // guards its
	its      []*badger.Iterator    // idle iterators of snap (AllVersions, no prefix)
	writes   map[string]pendingVal // filled by mutations
	flushing map[string]pendingVal // being written to badger: still the truth until it is
	bytes    int64                 // badger's size estimate of writes, to bound a batch
	after    []func()              // run once writes are in badger

	// A batch is flushed in the background past soft and by the mutation
	// that takes it past hard, which must stay within one badger
	// transaction (batches cannot be split: each is one crash-atomic step).
	soft, hard   limits
	valThreshold int64 // badger keeps bigger values out of the LSM tree

	flushMu sync.Mutex    // one flush at a time, in order
	kick    chan struct{} // the repository's flusher: a batch is full
	// saveRefs writes the chunk store's reference changes to the index
	// before a batch (refSaverOf).
	saveRefs func() error
}

type pendingVal struct {
	val []byte
	del bool
}

// writeTo sets (or deletes) key in txn.
func (pv pendingVal) writeTo(txn *badger.Txn, key string) error {
	if pv.del {
		return txn.Delete([]byte(key))
	}
	return txn.Set([]byte(key), pv.val)
}

// refSaver is the optional ChunkStore method that writes reference
// changes to the index ahead of the records holding them
// (store.Store.SaveReferences); *store.Store has it.
type refSaver interface {
	SaveReferences(ctx context.Context) error
}

// refSaverOf returns the step before every write of records that name
// chunks (pending batches, block records): a no-op when the chunk store
// keeps its counts elsewhere (the in-memory test store).
func refSaverOf(cs ChunkStore) func() error {
	rs, ok := cs.(refSaver)
	if !ok {
		return func() error { return nil }
	}
	return func() error {
		if err := rs.SaveReferences(context.Background()); err != nil {
			return storeErr("save chunk references", err)
		}
		return nil
	}
}

// pendingAge is how long metadata waits in memory at most (when something
// keeps the flusher from it, durability points still flush at once).
const pendingAge = 50 * time.Millisecond

type limits struct{ keys, bytes int64 }

func newPending(db *badger.DB, kick chan struct{}, saveRefs func() error) *pending {
	hard := limits{keys: db.MaxBatchCount() / 2, bytes: db.MaxBatchSize() / 2}
	return &pending{db: db, writes: map[string]pendingVal{}, kick: kick, saveRefs: saveRefs,
		hard: hard, soft: limits{keys: hard.keys / 4, bytes: hard.bytes / 4},
		valThreshold: db.Opts().ValueThreshold}
}

// cost is badger's estimate of what a write takes of a transaction.
func (p *pending) cost(k string, pv pendingVal) int64 {
	if int64(len(pv.val)) < p.valThreshold {
		return int64(len(k)+len(pv.val)) + 2 + 10
	}
	return int64(len(k)) + 12 + 2 + 10
}

func (p *pending) over(l limits) bool {
	return int64(len(p.writes)) >= l.keys || p.bytes >= l.bytes
}

// snapMaxAge bounds how long an idle snapshot lives: an open read
// transaction keeps badger from discarding the versions it could see.
const snapMaxAge = time.Second

// view runs fn with a reader of pending over the shared snapshot.
func (p *pending) view(fn func(r *rtx) error) error {
	p.mu.RLock()
	for p.snap == nil {
		if p.closed {
			p.mu.RUnlock()
			return fmt.Errorf("read staging: %w", ErrUnknownVolume)
		}
		p.mu.RUnlock()
		p.renewSnap(false)
		p.mu.RLock()
	}
	defer p.mu.RUnlock()
	return fn(&rtx{txn: p.snap, p: p})
}

// iterator returns an idle iterator of the snapshot, or a new one. The
// caller holds mu shared and gives it back with putIterator before it
// lets go: snapshots are only replaced under mu exclusively, which closes
// the idle iterators first.
func (p *pending) iterator() *badger.Iterator {
	p.itMu.Lock()
	if n := len(p.its); n > 0 {
		it := p.its[n-1]
		p.its = p.its[:n-1]
		p.itMu.Unlock()
		return it
	}
	p.itMu.Unlock()
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.AllVersions = true // see getBelow
	return p.snap.NewIterator(opts)
}

func (p *pending) putIterator(it *badger.Iterator) {
	p.itMu.Lock()
	defer p.itMu.Unlock()
	p.its = append(p.its, it)
}

// closeIterators closes the idle iterators (under mu exclusively, before
// the snapshot goes).
func (p *pending) closeIterators() {
	p.itMu.Lock()
	defer p.itMu.Unlock()
	for _, it := range p.its {
		it.Close()
	}
	p.its = nil
}

// renewSnap replaces the snapshot with one taken now; with onlyIfOld, only
// an old one (or none). The caller must not hold mu.
func (p *pending) renewSnap(onlyIfOld bool) {
	p.mu.RLock()
	fresh := p.snap != nil && (onlyIfOld && time.Since(p.snapAt) < snapMaxAge)
	p.mu.RUnlock()
	if fresh {
		return
	}
	// Taken before the lock: opening waits for commits in flight, and
	// readers should not wait for that.
	txn := p.db.NewTransaction(false)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		txn.Discard()
		return
	}
	old := p.snap
	p.closeIterators()
	p.snap, p.snapAt = txn, time.Now()
	p.mu.Unlock()
	if old != nil {
		old.Discard() // nobody reads it: they held mu shared, we had it
	}
}

// close drops the snapshot (Repo.Close, before badger closes).
func (p *pending) close() {
	p.mu.Lock()
	old := p.snap
	p.closeIterators()
	p.snap, p.closed = nil, true
	p.mu.Unlock()
	if old != nil {
		old.Discard()
	}
}

// lookup returns the pending value of key (under mu, shared or not).
func (p *pending) lookup(key []byte) (pendingVal, bool) {
	if pv, ok := p.writes[string(key)]; ok {
		return pv, true
	}
	pv, ok := p.flushing[string(key)]
	return pv, ok
}

// apply makes a mutation's writes visible, all at once. It reports a
// batch past the hard limit: the caller must flush before the next.
func (p *pending) apply(b *batch, after []func()) (mustFlush bool) {
	if len(b.keys) == 0 && len(after) == 0 {
		return false
	}
	p.mu.Lock()
	for _, k := range b.keys {
		pv := b.vals[k]
		if old, ok := p.writes[k]; ok {
			p.bytes -= p.cost(k, old)
		}
		p.writes[k] = pv
		p.bytes += p.cost(k, pv)
	}
	p.after = append(p.after, after...)
	full, mustFlush := p.over(p.soft), p.over(p.hard)
	p.mu.Unlock()
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return mustFlush
}

// flush writes everything applied so far to badger, then runs the hooks
// waiting for it. On error the writes stay pending (merged under any made
// since) for the next flush. With nothing to write it renews an old
// snapshot, or with force any.
func (p *pending) flush(force bool) error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	w, after := p.writes, p.after
	if len(w) == 0 && len(after) == 0 {
		p.mu.Unlock()
		p.renewSnap(!force)
		return nil
	}
	p.flushing = w
	p.writes, p.bytes, p.after = map[string]pendingVal{}, 0, nil
	p.mu.Unlock()

	// The batch's records name chunks whose references must reach the
	// index first (refSaver). After the swap above: every record in w
	// was made after its chunks were put.
	var err error
	if len(w) > 0 {
		err = p.saveRefs()
	}
	if err == nil {
		err = update(p.db, func(txn *badger.Txn) error {
			for k, pv := range w {
				if err := pv.writeTo(txn, k); err != nil {
					return err
				}
			}
			return nil
		})
	}

	var snap *badger.Txn
	if err == nil {
		snap = p.db.NewTransaction(false) // sees the batch: it may leave memory
	}
	p.mu.Lock()
	p.flushing = nil
	if err != nil {
		for k, pv := range w {
			if _, newer := p.writes[k]; !newer {
				p.writes[k] = pv
				p.bytes += p.cost(k, pv)
			}
		}
		p.after = append(after, p.after...)
		p.mu.Unlock()
		return fmt.Errorf("write staging records: %w", err)
	}
	old := p.snap
	p.closeIterators()
	if p.closed {
		old = snap // closed meanwhile: the new snapshot goes too
	} else {
		p.snap, p.snapAt = snap, time.Now()
	}
	p.mu.Unlock()
	if old != nil {
		old.Discard()
	}
	for _, f := range after {
		f()
	}
	return nil
}

// flushPending writes the volume's pending metadata to badger, and renews
// the snapshot staging reads (so they see what others wrote before).
func (v *volume) flushPending() error {
	if err := v.pend.flush(true); err != nil {
		return fmt.Errorf("volume %s: %w", v.rec.Name, err)
	}
	return nil
}

// flushPendingAll flushes the pending metadata of every volume.
func (r *Repo) flushPendingAll() error {
	return r.eachPending(func(p *pending) error { return p.flush(true) })
}

// eachPending calls fn with the pending writes of every volume.
func (r *Repo) eachPending(fn func(p *pending) error) error {
	var first error
	for _, v := range r.volumesByID() {
		if err := fn(v.pend); err != nil && first == nil {
			first = fmt.Errorf("volume %s: %w", v.rec.Name, err)
		}
	}
	return first
}

// pendingFlusher writes pending metadata in the background: when a batch
// is full, and otherwise every pendingAge.
func (r *Repo) pendingFlusher(kick <-chan struct{}) {
	defer r.workers.Done()
	t := time.NewTicker(pendingAge)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		case <-kick:
		}
		if err := r.eachPending(func(p *pending) error { return p.flush(false) }); err != nil {
			r.log.Warn("background metadata flush", "err", err)
		}
	}
}

// batch is one mutation's writes, applied to pending when it succeeds.
type batch struct {
	vals map[string]pendingVal
	keys []string // in write order, each once
}

func (b *batch) set(key, val []byte, del bool) {
	if b.vals == nil {
		b.vals = map[string]pendingVal{}
	}
	k := string(key)
	if _, ok := b.vals[k]; !ok {
		b.keys = append(b.keys, k)
	}
	b.vals[k] = pendingVal{val: val, del: del}
}

// rtx reads metadata: the running mutation's own writes, then the
// volume's pending writes, then a badger snapshot. Reads of sealed layers
// use neither (p and b nil).
type rtx struct {
	txn *badger.Txn
	p   *pending // caller holds p.mu shared
	b   *batch
}

// sealed wraps a transaction for reads that need no pending writes.
func sealed(txn *badger.Txn) *rtx { return &rtx{txn: txn} }

// pending returns key's value among the writes the snapshot does not
// hold yet: hit=false if none wrote it, ok=false if one deleted it.
func (r *rtx) pending(key []byte) (val []byte, ok, hit bool) {
	if r.b != nil {
		if pv, hit := r.b.vals[string(key)]; hit {
			return pv.val, !pv.del, true
		}
	}
	if r.p != nil {
		if pv, hit := r.p.lookup(key); hit {
			return pv.val, !pv.del, true
		}
	}
	return nil, false, false
}

// get returns the value of key, or ok=false if there is none.
func (r *rtx) get(key []byte) (val []byte, ok bool, err error) {
	if val, ok, hit := r.pending(key); hit {
		return val, ok, nil
	}
	item, err := r.txn.Get(key)
	if err == badger.ErrKeyNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	val, err = item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return val, true, nil
}

// overNames returns the pending versions at exactly seq of the named
// records under prefix (dataPrefix of an rkNamePrefix) with names after
// `after`, sorted by name; the mutation's own writes win over pending
// ones. Values keep their flag byte.
func (r *rtx) overNames(prefix []byte, seq uint64, after string) []namedVal {
	var out []namedVal
	var seen map[string]bool
	pfx := string(prefix)
	// add runs for every pending write on each directory page read: no
	// allocation unless the write is a record under prefix.
	add := func(k string, pv pendingVal) {
		if pv.del || len(k) < len(pfx)+9 || !strings.HasPrefix(k, pfx) {
			return
		}
		if ^binary.BigEndian.Uint64([]byte(k[len(k)-8:])) != seq {
			return
		}
		name := k[len(pfx) : len(k)-9]
		if name <= after && after != "" || seen[name] {
			return
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[name] = true
		out = append(out, namedVal{name: name, val: pv.val})
	}
	if r.b != nil {
		for _, k := range r.b.keys {
			add(k, r.b.vals[k])
		}
	}
	if r.p != nil {
		for k, pv := range r.p.writes {
			add(k, pv)
		}
		for k, pv := range r.p.flushing {
			add(k, pv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

type namedVal struct {
	name string
	val  []byte
}

// stagingView runs fn with a reader of the staging head of v.
func (v *volume) stagingView(fn func(r *rtx) error) error { return v.pend.view(fn) }

// writeTo sets the batch's keys in txn (block disks write their records
// straight to badger).
func (b *batch) writeTo(txn *badger.Txn) error {
	for _, k := range b.keys {
		if err := b.vals[k].writeTo(txn, k); err != nil {
			return fmt.Errorf("write record: %w", err)
		}
	}
	return nil
}
