package fs

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/strata-backup/strata/layers"
)

// Staging cache lifetimes. We are the only writer of a staging head and
// every change passes through this mount, so the kernel's copy stays
// right (a commit changes nothing visible, and the kernel itself
// invalidates what create, write, link, unlink and rename change). So
// entries and attributes live long: the no-change pass of a repeated
// rsync is then lstat(2) answered from the kernel's dentry cache, like on
// a local filesystem, instead of one LOOKUP round trip per file. Negative
// entries are safe for the same reason (rsync's create-temp-then-rename
// goes through this kernel, which turns the cached "no such file" into
// the new entry itself) but are kept short: they only save rsync's first
// lookup of a name, and a long life would fill the dentry cache with its
// temporary names.
var stagingCache = cacheTimes{entry: time.Hour, attr: time.Hour, negative: time.Second}

// MountStaging mounts the writable head of an fs volume at dir.
// Close/flush start chunking a file's writes, fsync makes them durable,
// and Unmount (or an external umount) runs Staging.Sync.
func MountStaging(ctx context.Context, dir string, st *layers.Staging, opts Options) (*Mount, error) {
	opts = opts.withDefaults()
	errs := &errLog{logger: opts.Logger, now: opts.Now}
	raw := newTreeFS(st.Tree(), st, 0, stagingCache, opts, errs)
	if !opts.NoWarm {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("mount staging at %s: %w", dir, err)
		}
		raw.warm = newWarmer(abs, opts.Logger, opts.Now)
	}
	m, err := mount(ctx, dir, raw, opts, mountParams{name: "staging", acl: true, flush: st.Sync, stop: raw.warm.stop, writers: raw.writers})
	if err != nil {
		raw.warm.stop()
		return nil, err
	}
	return m, nil
}

// Revision cache lifetimes: nothing changes under a revision, so the
// kernel may keep everything as long as it likes.
var revisionCache = cacheTimes{entry: time.Hour, attr: time.Hour, negative: time.Hour, keepCache: true}

// MountTree mounts a read-only view of an fs volume (a revision) at dir.
// Every write fails with EROFS.
func MountTree(ctx context.Context, dir string, t *layers.Tree, opts Options) (*Mount, error) {
	opts = opts.withDefaults()
	errs := &errLog{logger: opts.Logger, now: opts.Now}
	raw := newRevisionFS(t, 0, nil, opts, errs)
	m, err := mount(ctx, dir, raw, opts, mountParams{name: "revision", acl: true, readOnly: true})
	if err != nil {
		raw.pre.close()
		return nil, err
	}
	go func() {
		m.Wait()
		raw.pre.close()
	}()
	return m, nil
}
