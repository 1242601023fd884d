package shardtest

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"github.com/strata-backup/strata/store/shard"
)

// Faulty wraps a Backend and injects faults: refused writes (for example a
// full disk), objects that read as missing, and bit flips in what reads
// return. The zero configuration passes everything through. Safe for
// concurrent use.
type Faulty struct {
	shard.Backend

	mu       sync.Mutex
	putErr   error            // guarded by mu: returned by every Put while set
	budget   int64            // guarded by mu: bytes Put may still write; < 0 unlimited
	lost     bool             // guarded by mu: every object reads as missing
	flip     map[string]int64 // guarded by mu: name → offset whose bit reads flipped
	putCount int              // guarded by mu
}

// NewFaulty wraps b with no faults configured.
func NewFaulty(b shard.Backend) *Faulty {
	return &Faulty{Backend: b, budget: -1, flip: map[string]int64{}}
}

// FailPuts makes every Put fail with err (nil heals).
func (f *Faulty) FailPuts(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putErr = err
}

// LimitSpace lets Put write n more bytes, then fail with ENOSPC, like a
// filesystem filling up; n < 0 removes the limit.
func (f *Faulty) LimitSpace(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budget = n
}

// Lose makes every object read as missing (a dead disk) until Lose(false).
func (f *Faulty) Lose(lost bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = lost
}

// Flip makes reads of name return the byte at off with its low bit flipped.
func (f *Faulty) Flip(name string, off int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flip[name] = off
}

// Puts returns how many Puts succeeded.
func (f *Faulty) Puts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.putCount
}

// Put implements shard.Backend.
func (f *Faulty) Put(ctx context.Context, name string, data []byte) error {
	f.mu.Lock()
	if f.putErr != nil {
		err := f.putErr
		f.mu.Unlock()
		return fmt.Errorf("put %s: %w", name, err)
	}
	if f.budget >= 0 {
		if int64(len(data)) > f.budget {
			f.budget = 0
			f.mu.Unlock()
			return fmt.Errorf("put %s: %w", name, syscall.ENOSPC)
		}
		f.budget -= int64(len(data))
	}
	f.mu.Unlock()
	if err := f.Backend.Put(ctx, name, data); err != nil {
		return err
	}
	f.mu.Lock()
	f.putCount++
	f.mu.Unlock()
	return nil
}

// GetRange implements shard.Backend.
func (f *Faulty) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	f.mu.Lock()
	lost := f.lost
	flipAt, flip := f.flip[name]
	f.mu.Unlock()
	if lost {
		return fmt.Errorf("read %s: %w", name, shard.ErrNotFound)
	}
	if err := f.Backend.GetRange(ctx, name, off, p); err != nil {
		return err
	}
	if flip && flipAt >= off && flipAt < off+int64(len(p)) {
		p[flipAt-off] ^= 1
	}
	return nil
}

// Stat implements shard.Backend.
func (f *Faulty) Stat(ctx context.Context, name string) (shard.Info, error) {
	f.mu.Lock()
	lost := f.lost
	f.mu.Unlock()
	if lost {
		return shard.Info{}, fmt.Errorf("stat %s: %w", name, shard.ErrNotFound)
	}
	return f.Backend.Stat(ctx, name)
}

// List implements shard.Backend.
func (f *Faulty) List(ctx context.Context, fn func(shard.Info) error) error {
	f.mu.Lock()
	lost := f.lost
	f.mu.Unlock()
	if lost {
		return nil
	}
	return f.Backend.List(ctx, fn)
}

// Space forwards to the wrapped backend's shard.Spacer, if it has one.
func (f *Faulty) Space(ctx context.Context) (shard.Space, error) {
	s, ok := f.Backend.(shard.Spacer)
	if !ok {
		return shard.Space{}, fmt.Errorf("space: backend does not report capacity")
	}
	return s.Space(ctx)
}
