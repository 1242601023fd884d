package retention_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// BenchmarkPlan10k plans 10,000 revisions (roughly hourly with jitter over
// 14 months, tagged) with a combined GFS policy in Europe/Berlin; the
// target is < 100 ms per plan.
func BenchmarkPlan10k(b *testing.B) {
	rng := rand.New(rand.NewPCG(10, 10))
	loc := berlin(b)
	t := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	revs := make([]retention.Revision, 10000)
	for i := range revs {
		t = t.Add(time.Duration(30+rng.IntN(60)) * time.Minute)
		revs[i] = retention.Revision{ID: fmt.Sprintf("%016x", rng.Uint64()), Time: t, Added: int64(rng.IntN(1 << 20))}
		if rng.IntN(100) == 0 {
			revs[i].Tags = []string{"important"}
		}
	}
	pol := retention.Policy{Last: 10, Hourly: 48, Daily: 30, Weekly: 52, Monthly: 24, Yearly: retention.Unlimited,
		Within: retention.Days(2), WithinDaily: retention.Duration{Months: 2}, WithinWeekly: retention.Duration{Years: 1},
		KeepTags: [][]string{{"important"}}}
	opts := retention.Options{Now: t.Add(time.Hour), Location: loc}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := retention.Apply(revs, pol, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlan10kAll adds a schedule, Hanoi and a space goal.
func BenchmarkPlan10kAll(b *testing.B) {
	rng := rand.New(rand.NewPCG(11, 11))
	t := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	s, err := retention.ParseScheduleSpec("hourly=1h:24,daily=1d:7,weekly=1w:4,monthly=30d:12")
	if err != nil {
		b.Fatal(err)
	}
	revs := make([]retention.Revision, 10000)
	for i := range revs {
		t = t.Add(time.Duration(30+rng.IntN(60)) * time.Minute)
		revs[i] = retention.Revision{ID: fmt.Sprintf("%016x", rng.Uint64()), Time: t, Added: int64(rng.IntN(1 << 20)), Tags: []string{"hourly"}}
		if i%24 == 0 {
			revs[i].Tags = append(revs[i].Tags, "daily")
		}
	}
	pol := retention.Policy{Daily: 30, Weekly: 52, Schedule: &s, Hanoi: &retention.Hanoi{Discs: 12},
		Space: &retention.Space{MaxSize: 1 << 32}}
	opts := retention.Options{Now: t.Add(time.Hour), Usage: retention.Usage{RepoSize: 1 << 33}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := retention.Apply(revs, pol, opts); err != nil {
			b.Fatal(err)
		}
	}
}
