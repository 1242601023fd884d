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
	for _, id := range ids {
		if err := lr.RemoveRevision(ctx, vol, id); err != nil {
			return fmt.Errorf("remove %s@%s: %w", vol, id, err)
		}
	}
	return nil
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
