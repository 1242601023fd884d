package layers

import "context"

// FlushPending writes the pending staging metadata to badger, as the
// background flusher does every pendingAge: crash tests use it to stand
// for a server that ran that long after the changes.
func FlushPending(r *Repo) error { return r.flushPendingAll() }

// CachedChunks is how many chunks the chunk cache holds.
func CachedChunks(r *Repo) int {
	r.cache.mu.Lock()
	defer r.cache.mu.Unlock()
	return len(r.cache.items)
}

// CachedFileMaps is how many files' maps a revision's file-map cache holds.
func CachedFileMaps(t *Tree) int {
	if t.files == nil {
		return 0
	}
	t.files.mu.Lock()
	defer t.files.mu.Unlock()
	return len(t.files.items)
}

// StopBackground stops the repo's background goroutines without closing
// it, as the death of the process would: crash tests call it before they
// close the index under an abandoned repo.
func StopBackground(r *Repo) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	close(r.done)
	r.workers.Wait()
}

// SetAfterSync has every durable point run fn after the index is synced.
func SetAfterSync(r *Repo, fn func()) { r.afterSync.Store(&fn) }

// FlushNow chunks ino's buffered data into the store and its extent map
// into pending, as a flush worker does.
func FlushNow(ctx context.Context, st *Staging, ino Ino) error {
	f := st.v.lookupFile(ino)
	if f == nil {
		return nil
	}
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	return f.flush(ctx)
}
