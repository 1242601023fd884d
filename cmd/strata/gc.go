package main

import (
	"context"
	"fmt"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
)

// removeRevisions drops revisions from a volume's history; the layer
// records only they could reach are freed and their chunk references
// released (layers does that, crash-safely).
func removeRevisions(ctx context.Context, lr *layers.Repo, vol string, ids []string) error {
	rr, ok := any(lr).(interface {
		RemoveRevisions(ctx context.Context, volume string, ids []string) error
	})
	if !ok {
		return fmt.Errorf("removing revisions is not implemented yet; use --dry-run")
	}
	return rr.RemoveRevisions(ctx, vol, ids)
}

// collectGarbage gives the space of unreferenced chunks back: segments with
// only garbage are deleted, those above maxUnused repacked.
func collectGarbage(ctx context.Context, r *repository, maxUnused float64) (int64, error) {
	if maxUnused == 0 {
		maxUnused = 1e-9 // the user asked for 0%: repack anything with garbage
	}
	st, err := r.store.GC(ctx, store.GCOptions{MaxUnused: maxUnused})
	if err != nil {
		return st.BytesFreed, fmt.Errorf("collect garbage: %w", err)
	}
	r.log.Info("garbage collected", "segments_deleted", st.SegmentsDeleted, "segments_repacked", st.SegmentsRepacked,
		"chunks_freed", st.ChunksFreed, "bytes_freed", st.BytesFreed)
	return st.BytesFreed, nil
}
