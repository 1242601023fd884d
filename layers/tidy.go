package layers

import "github.com/strata-backup/strata/store/index"

// indexTidier compacts the index after commits (index.Tidy), in the
// background so a commit returns as soon as its revision is durable. A
// commit is when a backup has finished writing, and what comes next are
// reads that seek through every level of the index: the next backup's
// pass over staging, or a mount of the revision. A kick during a
// compaction queues one more.
func (r *Repo) indexTidier(kick <-chan struct{}) {
	defer r.workers.Done()
	for {
		select {
		case <-r.done:
			return
		case <-kick:
		}
		select {
		case <-r.done: // closing: not now
			return
		default:
		}
		did, err := index.Tidy(r.db)
		if err != nil {
			r.log.Warn("compact index after commit", "err", err)
		} else if did {
			r.log.Debug("compacted index after commit")
		}
	}
}

// tidyIndex asks indexTidier for a compaction.
func (r *Repo) tidyIndex() {
	select {
	case r.tidyKick <- struct{}{}:
	default:
	}
}
