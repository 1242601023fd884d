package main

import (
	"context"
	"fmt"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
)

// removeRevisions drops revisions from a volume's history; the layer
// records only they could reach are freed and their chunk references
// released (layers does that, crash-safely).
func removeRevisions(ctx context.Context, env *opEnv, vol string, ids []string) error {
	for i, id := range ids {
		if err := env.repo.layers.RemoveRevision(ctx, vol, id); err != nil {
			return fmt.Errorf("remove %s@%s: %w", vol, id, err)
		}
		if env.progress != nil {
			env.progress(progress{Phase: "removing revisions of " + vol, Done: int64(i + 1), Total: int64(len(ids))})
		}
	}
	return nil
}

// finishRemovals completes revision removals an earlier prune started but
// did not finish (killed, or its store failed): their chunk references are
// recounted, which needs the repository to itself — without a server, so
// no mount writes meanwhile. With a server running it returns a warning
// for the user instead; the counts are too high until then, which costs
// space, never data.
func finishRemovals(ctx context.Context, env *opEnv) (string, error) {
	lr := env.repo.layers
	pending, err := lr.RemovalsPending(ctx)
	if err != nil || !pending {
		return "", err
	}
	if env.srv != nil {
		const warn = "an interrupted prune left chunk references to recount, which needs the repository to itself: run 'strata stop' (it unmounts everything) and prune again to give that space back"
		env.repo.log.Warn(warn)
		return warn, nil
	}
	if env.progress != nil {
		env.progress(progress{Phase: "finishing an interrupted prune: recount chunk references"})
	}
	n, err := lr.FinishRemovals(ctx, func(ctx context.Context, refs func(yield func(chunk.ID) error) error) error {
		_, err := env.repo.store.SetReferences(ctx, refs)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("finish an interrupted prune (rerun prune): %w", err)
	}
	env.repo.log.Info("finished interrupted revision removals", "removals", n)
	return "", nil
}

// collectGarbage gives the space of unreferenced chunks back: segments with
// only garbage are deleted, those above maxUnused repacked.
func collectGarbage(ctx context.Context, r *repository, maxUnused float64) (store.GCStats, error) {
	if maxUnused == 0 {
		maxUnused = 1e-9 // the user asked for 0%: repack anything with garbage
	}
	st, err := r.store.GC(ctx, store.GCOptions{MaxUnused: maxUnused})
	if err != nil {
		return st, fmt.Errorf("collect garbage: %w", err)
	}
	r.log.Info("garbage collected", "segments_deleted", st.SegmentsDeleted, "segments_repacked", st.SegmentsRepacked,
		"chunks_freed", st.ChunksFreed, "bytes_freed", st.BytesFreed, "unused_left", st.UnusedLeft)
	return st, nil
}
