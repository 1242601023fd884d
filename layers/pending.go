package layers

import (
	"bytes"
	"fmt"
	"sort"
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
// badger read with a transaction older than the batch's commit: readers
// hold mu shared from before they open their transaction until they are
// done, and a batch leaves memory only under mu exclusively.
type pending struct {
	mu       sync.RWMutex
	writes   map[string]pendingVal // filled by mutations
	flushing map[string]pendingVal // being written to badger: still the truth until it is
	bytes    int                   // size of writes, to bound a batch
	after    []func()              // run once writes are in badger

	flushMu sync.Mutex    // one flush at a time, in order
	kick    chan struct{} // the repository's flusher: a batch is full
}

type pendingVal struct {
	val []byte
	del bool
}

// Batches are flushed at these sizes or after pendingAge, well below
// badger's transaction limits (about a tenth of a 16 MiB memtable).
const (
	pendingMaxKeys  = 8192
	pendingMaxBytes = 1 << 20
	pendingAge      = 50 * time.Millisecond
)

func newPending(kick chan struct{}) *pending {
	return &pending{writes: map[string]pendingVal{}, kick: kick}
}

// lookup returns the pending value of key (under mu, shared or not).
func (p *pending) lookup(key []byte) (pendingVal, bool) {
	if pv, ok := p.writes[string(key)]; ok {
		return pv, true
	}
	pv, ok := p.flushing[string(key)]
	return pv, ok
}

// apply makes a mutation's writes visible, all at once.
func (p *pending) apply(b *batch, after []func()) {
	if len(b.keys) == 0 && len(after) == 0 {
		return
	}
	p.mu.Lock()
	for _, k := range b.keys {
		pv := b.vals[k]
		if old, ok := p.writes[k]; ok {
			p.bytes -= len(k) + len(old.val)
		}
		p.writes[k] = pv
		p.bytes += len(k) + len(pv.val)
	}
	p.after = append(p.after, after...)
	full := len(p.writes) >= pendingMaxKeys || p.bytes >= pendingMaxBytes
	p.mu.Unlock()
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// flush writes everything applied so far to badger, then runs the hooks
// waiting for it. On error the writes stay pending (merged under any made
// since) for the next flush.
func (p *pending) flush(db *badger.DB) error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	w, after := p.writes, p.after
	if len(w) == 0 && len(after) == 0 {
		p.mu.Unlock()
		return nil
	}
	p.flushing = w
	p.writes, p.bytes, p.after = map[string]pendingVal{}, 0, nil
	p.mu.Unlock()

	err := update(db, func(txn *badger.Txn) error {
		for k, pv := range w {
			var err error
			if pv.del {
				err = txn.Delete([]byte(k))
			} else {
				err = txn.Set([]byte(k), pv.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})

	p.mu.Lock()
	p.flushing = nil
	if err != nil {
		for k, pv := range w {
			if _, newer := p.writes[k]; !newer {
				p.writes[k] = pv
				p.bytes += len(k) + len(pv.val)
			}
		}
		p.after = append(after, p.after...)
		p.mu.Unlock()
		return fmt.Errorf("write staging records: %w", err)
	}
	p.mu.Unlock()
	for _, f := range after {
		f()
	}
	return nil
}

// empty reports whether nothing waits for a flush.
func (p *pending) empty() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.writes) == 0 && len(p.after) == 0
}

// flushPending writes the volume's pending metadata to badger.
func (v *volume) flushPending() error {
	if err := v.pend.flush(v.r.db); err != nil {
		return fmt.Errorf("volume %s: %w", v.rec.Name, err)
	}
	return nil
}

// flushPendingAll flushes the pending metadata of every volume.
func (r *Repo) flushPendingAll() error {
	r.mu.Lock()
	vols := make([]*volume, 0, len(r.vols))
	for _, v := range r.vols {
		vols = append(vols, v)
	}
	r.mu.Unlock()
	var first error
	for _, v := range vols {
		if err := v.flushPending(); err != nil && first == nil {
			first = err
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
		if err := r.flushPendingAll(); err != nil {
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

// get returns the value of key, or ok=false if there is none.
func (r *rtx) get(key []byte) (val []byte, ok bool, err error) {
	if r.b != nil {
		if pv, hit := r.b.vals[string(key)]; hit {
			return pv.val, !pv.del, nil
		}
	}
	if r.p != nil {
		if pv, hit := r.p.lookup(key); hit {
			return pv.val, !pv.del, nil
		}
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
	seen := map[string]bool{}
	add := func(k string, pv pendingVal) {
		key := []byte(k)
		if pv.del || len(key) < len(prefix)+9 || !bytes.HasPrefix(key, prefix) {
			return
		}
		if _, vseq := splitVersion(key); vseq != seq {
			return
		}
		name := string(key[len(prefix) : len(key)-9])
		if name <= after && after != "" || seen[name] {
			return
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

// stagingView runs fn with a reader of the staging head of v: pending
// writes over a badger snapshot taken after they were looked at.
func (v *volume) stagingView(fn func(r *rtx) error) error {
	v.pend.mu.RLock()
	defer v.pend.mu.RUnlock()
	return v.r.db.View(func(txn *badger.Txn) error {
		return fn(&rtx{txn: txn, p: v.pend})
	})
}

// writeTo sets the batch's keys in txn (block disks write their records
// straight to badger).
func (b *batch) writeTo(txn *badger.Txn) error {
	for _, k := range b.keys {
		pv := b.vals[k]
		var err error
		if pv.del {
			err = txn.Delete([]byte(k))
		} else {
			err = txn.Set([]byte(k), pv.val)
		}
		if err != nil {
			return fmt.Errorf("write record: %w", err)
		}
	}
	return nil
}
