package retention

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// item is the planner's working state for one revision.
type item struct {
	rev  Revision
	st   stamp
	idx  int      // position in the caller's slice (ties: later = newer)
	keep bool     // kept by a rule
	why  []Reason // reasons a rule keeps it
	gone []Reason // notes on why rules let it go
}

func (it *item) keepFor(r Reason) {
	it.keep = true
	it.why = append(it.why, r)
}

// Apply decides, for every revision, whether policy p keeps it, with
// reasons. It validates p first. Decisions come newest first.
//
// Rules combine by OR: a revision kept by any rule stays. The space goal
// (Policy.Space) removes, least important first, only among revisions no
// other rule keeps. Safety rails then override everything: the newest
// revision and protected revisions always stay; a mounted revision that
// would go stays with Deferred set.
//
// When no rule keeps any revision, Apply returns the plan together with an
// error wrapping ErrRemovesAll, unless opts.Force is set; callers may show
// the plan but must not execute it.
func Apply(revs []Revision, p Policy, opts Options) (*Plan, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid retention policy: %w", err)
	}
	if len(revs) == 0 {
		return nil, ErrNoRevisions
	}
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}

	items := make([]*item, len(revs))
	backing := make([]item, len(revs))
	// Most revisions get a few reasons at most: carve them from one slab.
	const slab = 3
	why := make([]Reason, slab*len(revs))
	for i, r := range revs {
		backing[i] = item{rev: r, st: newStamp(r.Time, loc), idx: i, why: why[i*slab : i*slab : i*slab+slab]}
		items[i] = &backing[i]
	}
	// Newest first; equal times: later in the input counts as newer.
	slices.SortFunc(items, func(a, b *item) int {
		if c := b.rev.Time.Compare(a.rev.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.idx, a.idx)
	})

	// Durations count back from the newest revision that is not in the
	// future (restic); revisions in the future thus always fall "within".
	latest := now
	for _, it := range items {
		if !it.rev.Time.After(now) {
			latest = it.rev.Time
			break
		}
	}

	plan := &Plan{}
	applyGFS(items, p, latest, loc)
	applyTags(items, p.KeepTags)
	if p.Schedule != nil {
		applySchedule(items, *p.Schedule, now, loc)
	}
	if p.Hanoi != nil {
		applyHanoi(items, *p.Hanoi)
	}
	if p.Space != nil {
		plan.Space, plan.Warnings = applySpace(items, *p.Space, opts.Usage, now, loc)
	}

	anyKept := false
	for _, it := range items {
		if it.keep {
			anyKept = true
			break
		}
	}

	plan.Decisions = make([]Decision, len(items))
	for i, it := range items {
		d := Decision{Revision: it.rev, Keep: it.keep}
		if i == 0 {
			d.Keep = true
			d.Reasons = append(d.Reasons, Reason{Rule: "newest", Text: "newest"})
		}
		if it.rev.Protected {
			d.Keep = true
			d.Reasons = append(d.Reasons, Reason{Rule: "protected", Text: "protected"})
		}
		d.Reasons = append(d.Reasons, it.why...)
		if !d.Keep && it.rev.Mounted {
			d.Keep, d.Deferred = true, true
			// Why it would go stays in the reasons: a space goal's rank
			// orders it among other volumes' removals (cmd's spaceShares).
			d.Reasons = append(d.Reasons, Reason{Rule: "mounted", Text: "mounted or served: removal deferred"})
			d.Reasons = append(d.Reasons, it.gone...)
		}
		if !d.Keep {
			d.Reasons = append(d.Reasons, it.gone...)
			if len(d.Reasons) == 0 {
				d.Reasons = append(d.Reasons, Reason{Rule: "none", Text: "no rule keeps it"})
			}
		}
		plan.Decisions[i] = d
	}
	if !anyKept && !opts.Force {
		return plan, fmt.Errorf("%w: %s matches none of the %d revisions; check the options or use --force (the newest revision stays regardless)",
			ErrRemovesAll, p, len(items))
	}
	return plan, nil
}
