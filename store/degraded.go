package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/strata-backup/strata/store/shard"
)

// A shard dir that is missing or unusable at Open (a dead or unmounted
// disk) does not stop the store while at most M are: its slot reads as if
// every shard file in it were lost, so reads reconstruct from parity,
// segment writes skip it, and Scrub reports every segment without its
// shard as damaged. Scrub with Repair recreates the directory (only its
// last path element, so nothing is written onto the parent of an
// unmounted disk) and rewrites the shards from parity.

// errShardDirMissing marks writes to a shard dir that is missing.
var errShardDirMissing = errors.New("shard dir missing")

var (
	_ shard.Stager  = (*dirSlot)(nil)
	_ shard.Batcher = (*dirSlot)(nil)
	_ shard.Spacer  = (*dirSlot)(nil)
)

// dirSlot is the backend of one configured shard dir. Its Local is nil
// while the dir is missing or unusable.
type dirSlot struct {
	index int
	dir   string

	mu    sync.RWMutex
	local *shard.Local // guarded by mu
	err   error        // guarded by mu: why local is nil
}

func (d *dirSlot) get() (*shard.Local, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.local, d.err
}

// missing reports whether the dir is unusable.
func (d *dirSlot) missing() bool {
	l, _ := d.get()
	return l == nil
}

// restore recreates the missing dir (one level, never its parents) and
// starts using it.
func (d *dirSlot) restore(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Dir(d.dir)); err != nil {
		return fmt.Errorf("recreate shard dir %d: parent of %s: %w (is the disk mounted?)", d.index, d.dir, err)
	}
	if err := os.Mkdir(d.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("recreate shard dir %d: %w", d.index, err)
	}
	l, err := shard.OpenLocal(d.dir)
	if err != nil {
		d.err = err
		return fmt.Errorf("recreate shard dir %d: %w", d.index, err)
	}
	if err := l.Clean(ctx); err != nil {
		return fmt.Errorf("recreate shard dir %d: %w", d.index, err)
	}
	if err := syncDir(filepath.Dir(d.dir)); err != nil {
		return fmt.Errorf("recreate shard dir %d: %w", d.index, err)
	}
	d.local, d.err = l, nil
	return nil
}

func (d *dirSlot) missingErr() error {
	_, err := d.get()
	return fmt.Errorf("shard dir %d (%s): %w: %v", d.index, d.dir, errShardDirMissing, err)
}

// dirSlot must keep Local's fast paths: putShards checks for them.
var (
	_ shard.Batcher = (*dirSlot)(nil)
	_ shard.Stager  = (*dirSlot)(nil)
)

func (d *dirSlot) Put(ctx context.Context, name string, data []byte) error {
	l, _ := d.get()
	if l == nil {
		return d.missingErr()
	}
	return l.Put(ctx, name, data)
}

func (d *dirSlot) PutBatch(ctx context.Context, name string, data ...[]byte) error {
	l, _ := d.get()
	if l == nil {
		return d.missingErr()
	}
	return l.PutBatch(ctx, name, data...)
}

func (d *dirSlot) Stage(ctx context.Context, name string, data ...[]byte) (shard.Staged, error) {
	l, _ := d.get()
	if l == nil {
		return nil, d.missingErr()
	}
	return l.Stage(ctx, name, data...)
}

func (d *dirSlot) SyncBatch(ctx context.Context) error {
	l, _ := d.get()
	if l == nil {
		return nil // nothing was put
	}
	return l.SyncBatch(ctx)
}

func (d *dirSlot) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	l, _ := d.get()
	if l == nil {
		return fmt.Errorf("read %s: %w", name, shard.ErrNotFound)
	}
	return l.GetRange(ctx, name, off, p)
}

func (d *dirSlot) Delete(ctx context.Context, name string) error {
	l, _ := d.get()
	if l == nil {
		return nil
	}
	return l.Delete(ctx, name)
}

func (d *dirSlot) List(ctx context.Context, fn func(shard.Info) error) error {
	l, _ := d.get()
	if l == nil {
		return nil
	}
	return l.List(ctx, fn)
}

func (d *dirSlot) Stat(ctx context.Context, name string) (shard.Info, error) {
	l, _ := d.get()
	if l == nil {
		return shard.Info{}, fmt.Errorf("stat %s: %w", name, shard.ErrNotFound)
	}
	return l.Stat(ctx, name)
}

func (d *dirSlot) Space(ctx context.Context) (shard.Space, error) {
	l, _ := d.get()
	if l == nil {
		return shard.Space{}, d.missingErr()
	}
	return l.Space(ctx)
}

// openSlot opens one configured shard dir; a missing or unusable dir gives
// a slot without a Local and the reason as a *ShardDirError.
func openSlot(ctx context.Context, i int, p string) (*dirSlot, *ShardDirError) {
	slot := &dirSlot{index: i, dir: p}
	fail := func(err error) (*dirSlot, *ShardDirError) {
		slot.err = err
		return slot, &ShardDirError{Index: i, Dir: p, Err: err}
	}
	if _, err := os.Stat(p); err != nil {
		return fail(err)
	}
	l, err := shard.OpenLocal(p)
	if err != nil {
		if u := errors.Unwrap(err); u != nil {
			err = u
		}
		return fail(err)
	}
	if err := l.Clean(ctx); err != nil {
		return fail(err)
	}
	slot.local = l
	return slot, nil
}

// MissingShardDirs lists the shard dirs that are missing or unusable (the
// store runs degraded while there are any).
func (s *Store) MissingShardDirs() []int {
	var out []int
	for i, b := range s.backends {
		if d, ok := b.(*dirSlot); ok && d.missing() {
			out = append(out, i)
		}
	}
	return out
}

// isMissing reports whether shard dir i is known to be missing.
func (s *Store) isMissing(i int) bool {
	d, ok := s.backends[i].(*dirSlot)
	return ok && d.missing()
}

// restoreShardDirs recreates missing shard dirs before a repair; dirs
// that cannot be recreated stay missing and are logged.
func (s *Store) restoreShardDirs(ctx context.Context) {
	for _, i := range s.MissingShardDirs() {
		d := s.backends[i].(*dirSlot)
		if err := d.restore(ctx); err != nil {
			s.log.Error("shard dir still missing", "shard", i, "dir", d.dir, "err", err)
			continue
		}
		s.log.Warn("recreated missing shard dir; rewriting its shards from parity", "shard", i, "dir", d.dir)
	}
}
