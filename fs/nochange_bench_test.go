package fs

import (
	"context"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// BenchmarkRsyncNoChange: the second rsync -a of the corpus into staging
// after a commit, with caches dropped (one LOOKUP per entry, read from the
// sealed layer). Run with -benchtime=1x.
func BenchmarkRsyncNoChange(b *testing.B) {
	src, _ := benchCorpus(b)
	r, mnt, m := benchStaging(b)
	defer m.Unmount()
	benchRun(b, "rsync", "-a", src+"/", mnt+"/")
	if _, err := r.Commit(context.Background(), "bench", layers.CommitOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropCaches(b)
		b.StartTimer()
		benchRun(b, "rsync", "-a", src+"/", mnt+"/")
	}
}
