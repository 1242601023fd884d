package store

import (
	"context"
	"sync"
)

// groupSync coalesces concurrent requests for an expensive sync (a
// directory or index fsync): a caller is done once a sync that started
// after its request has finished, so callers arriving while a sync runs
// share the next one.
type groupSync struct {
	fn func(ctx context.Context) error

	mu      sync.Mutex
	cond    *sync.Cond
	seq     uint64 // guarded by mu: last request
	done    uint64 // guarded by mu: last request covered by a finished sync
	running bool   // guarded by mu
}

func newGroupSync(fn func(ctx context.Context) error) *groupSync {
	g := &groupSync{fn: fn}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync returns after a sync covering everything the caller did before
// calling it, or with that sync's error.
func (g *groupSync) Sync(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	mine := g.seq
	for g.done < mine {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		target := g.seq
		g.mu.Unlock()
		err := g.fn(ctx)
		g.mu.Lock()
		g.running = false
		g.cond.Broadcast()
		if err != nil {
			return err
		}
		g.done = max(g.done, target)
	}
	return nil
}
