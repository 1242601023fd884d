package retention_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// randomTimeline builds n revisions with irregular gaps (minutes to weeks),
// random tags and a few protected or mounted ones.
func randomTimeline(rng *rand.Rand, n int) []retention.Revision {
	t := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	tags := []string{"daily", "weekly", "manual", "important"}
	var revs []retention.Revision
	for i := 0; i < n; i++ {
		switch rng.IntN(4) {
		case 0:
			t = t.Add(time.Duration(rng.IntN(90)) * time.Minute)
		case 1:
			t = t.Add(time.Duration(rng.IntN(30)) * time.Hour)
		default:
			t = t.Add(time.Duration(rng.IntN(10*24)) * time.Hour)
		}
		r := retention.Revision{ID: fmt.Sprintf("r%04d", i), Time: t, Added: int64(rng.IntN(1000) + 1)}
		for _, tag := range tags {
			if rng.IntN(3) == 0 {
				r.Tags = append(r.Tags, tag)
			}
		}
		r.Protected = rng.IntN(40) == 0
		r.Mounted = rng.IntN(40) == 0
		revs = append(revs, r)
	}
	rng.Shuffle(len(revs), func(i, j int) { revs[i], revs[j] = revs[j], revs[i] })
	return revs
}

func randomPolicy(rng *rand.Rand) retention.Policy {
	count := func() int {
		if rng.IntN(3) == 0 {
			return 0
		}
		if rng.IntN(8) == 0 {
			return retention.Unlimited
		}
		return rng.IntN(12) + 1
	}
	dur := func() retention.Duration {
		if rng.IntN(3) != 0 {
			return retention.Duration{}
		}
		return retention.Duration{Months: rng.IntN(3), Days: rng.IntN(20), Hours: rng.IntN(30)}
	}
	p := retention.Policy{Last: count(), Hourly: count(), Daily: count(), Weekly: count(), Monthly: count(), Yearly: count(),
		Within: dur(), WithinHourly: dur(), WithinDaily: dur(), WithinWeekly: dur(), WithinMonthly: dur(), WithinYearly: dur()}
	if rng.IntN(3) == 0 {
		p.KeepTags = [][]string{{"important"}}
	}
	if rng.IntN(3) == 0 {
		p.Schedule = &retention.Schedule{Intervals: []retention.Interval{
			{Tag: "daily", Every: retention.Days(1), Keep: rng.IntN(10) + 1},
			{Tag: "weekly", Every: retention.Duration{Weeks: 1}, Keep: rng.IntN(6) + 1}}}
	}
	if rng.IntN(3) == 0 {
		p.Hanoi = &retention.Hanoi{Discs: rng.IntN(8) + 1, Archive: rng.IntN(2) == 0}
	}
	return p
}

// Rules combine by OR: a policy made of two disjoint halves keeps exactly
// the union of what each half keeps; the invariants hold on every plan.
func TestRandomPoliciesCombineByOr(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	compared := 0
	for round := 0; round < 60; round++ {
		revs := randomTimeline(rng, 200+rng.IntN(200))
		a, b := randomPolicy(rng), randomPolicy(rng)
		p1 := retention.Policy{Last: a.Last, Hourly: a.Hourly, Daily: a.Daily, Within: a.Within, WithinDaily: a.WithinDaily, Hanoi: a.Hanoi}
		p2 := retention.Policy{Weekly: b.Weekly, Monthly: b.Monthly, Yearly: b.Yearly, WithinWeekly: b.WithinWeekly, KeepTags: b.KeepTags, Schedule: b.Schedule}
		both := p1
		both.Weekly, both.Monthly, both.Yearly, both.WithinWeekly, both.KeepTags, both.Schedule = p2.Weekly, p2.Monthly, p2.Yearly, p2.WithinWeekly, p2.KeepTags, p2.Schedule
		if p1.Validate() != nil || p2.Validate() != nil {
			continue // an empty half
		}
		opts := retention.Options{Now: time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC), Force: true}
		if rng.IntN(2) == 0 {
			opts.Location = berlin(t)
		}
		k1, k2, k12 := keptIDs(apply(t, revs, p1, opts)), keptIDs(apply(t, revs, p2, opts)), keptIDs(apply(t, revs, both, opts))
		union := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(k1), k2...))))
		if !slices.Equal(k12, union) {
			t.Fatalf("round %d: %s with %s kept %d, union of the parts %d", round, p1, p2, len(k12), len(union))
		}
		compared++
	}
	if compared < 20 {
		t.Fatalf("only %d rounds compared", compared)
	}
}

// Every kept revision has a reason of its own rule kind, and every reason
// names a rule the policy has (or a safety rail).
func TestReasonsNameRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	revs := randomTimeline(rng, 500)
	p := apply(t, revs, retention.Policy{Last: 2, Daily: 5, WithinWeekly: retention.Duration{Months: 2}, KeepTags: [][]string{{"important"}}},
		retention.Options{Now: time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)})
	allowed := []string{"newest", "protected", "mounted", "last", "daily", "within-weekly", "tag"}
	for _, d := range p.Decisions {
		if !d.Keep {
			continue
		}
		for _, r := range d.Reasons {
			if !slices.Contains(allowed, r.Rule) {
				t.Errorf("%s: reason %q from rule %q", d.Revision.ID, r.Text, r.Rule)
			}
		}
		if slices.Contains(d.Revision.Tags, "important") && !slices.ContainsFunc(d.Reasons, func(r retention.Reason) bool { return r.Text == "tag:important" }) {
			t.Errorf("%s carries important but lacks tag:important", d.Revision.ID)
		}
	}
}
