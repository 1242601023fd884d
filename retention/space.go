package retention

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Space is byteback's space-driven pruning: remove revisions, least
// important first, until the repository fits MaxSize and/or the shard
// filesystems have MinFree bytes free.
type Space struct {
	MaxSize int64 `json:"max_size,omitempty"` // repository size limit in bytes; 0 = none
	MinFree int64 `json:"min_free,omitempty"` // free bytes wanted; 0 = none
	// AutoFree sets the free-space target to byteback's default: the
	// average Added of the newest 10 revisions plus 50%.
	AutoFree bool `json:"auto_free,omitempty"`
	// Order is "importance" (default) or "age" (oldest goes first).
	Order string `json:"order,omitempty"`
	// Targets are the ages importance scores against, most important
	// first; nil = DefaultTargets.
	Targets []Duration `json:"targets,omitempty"`
	// GuardFactor stops the space rule when the newest revision added more
	// than this many times the median of the 10 before it; 0 = 3, < 0 = off.
	GuardFactor float64 `json:"guard_factor,omitempty"`
}

// DefaultTargets are byteback's target ages: 0, 1, 2, 3, 7, 14, 21, 28, 56
// and 112 days.
var DefaultTargets = []Duration{Days(0), Days(1), Days(2), Days(3), Days(7), Days(14), Days(21), Days(28), Days(56), Days(112)}

// String renders e.g. "space: repository ≤ 10.0 GiB by importance".
func (s Space) String() string {
	return "space: " + s.goal(0) + " by " + s.order()
}

func (s Space) order() string {
	if s.Order == "" {
		return "importance"
	}
	return s.Order
}

func (s Space) goal(minFree int64) string {
	var g []string
	if s.MaxSize > 0 {
		g = append(g, "repository ≤ "+formatBytes(s.MaxSize))
	}
	switch {
	case s.MinFree > 0:
		g = append(g, "free ≥ "+formatBytes(s.MinFree))
	case s.AutoFree && minFree > 0:
		g = append(g, "free ≥ "+formatBytes(minFree)+" (1.5 × average added)")
	case s.AutoFree:
		g = append(g, "free ≥ 1.5 × average added")
	}
	return strings.Join(g, " and ")
}

func (s Space) validate() []error {
	var errs []error
	if s.MaxSize < 0 {
		errs = append(errs, &PolicyError{"--max-size", "negative size"})
	}
	if s.MinFree < 0 {
		errs = append(errs, &PolicyError{"--min-free", "negative size"})
	}
	if s.MinFree > 0 && s.AutoFree {
		errs = append(errs, &PolicyError{"--min-free", "give a size or auto, not both"})
	}
	if s.MaxSize <= 0 && s.MinFree <= 0 && !s.AutoFree {
		errs = append(errs, &PolicyError{"--max-size/--min-free", "space rule without a goal"})
	}
	if o := s.order(); o != "importance" && o != "age" {
		errs = append(errs, &PolicyError{"--space-order", fmt.Sprintf("unknown order %q; use importance or age", o)})
	}
	for _, t := range s.Targets {
		if t.Years < 0 || t.Months < 0 || t.Weeks < 0 || t.Days < 0 || t.Hours < 0 {
			errs = append(errs, &PolicyError{"--space-targets", fmt.Sprintf("negative target age %s", t)})
		}
	}
	if s.GuardFactor > 0 && s.GuardFactor <= 1 {
		errs = append(errs, &PolicyError{"--space-guard", fmt.Sprintf("factor %g must be above 1 (or negative to disable)", s.GuardFactor)})
	}
	return errs
}

// applySpace ranks all revisions and removes, least important first, those
// no other rule keeps until the goal is met; it keeps the rest.
func applySpace(items []*item, s Space, u Usage, now time.Time, loc *time.Location) (*SpaceReport, []string) {
	var warn []string
	rep := &SpaceReport{MaxSize: s.MaxSize, MinFree: s.MinFree}
	if s.AutoFree {
		var sum int64
		n := min(10, len(items))
		for _, it := range items[:n] {
			sum += it.rev.Added
		}
		rep.MinFree = sum / int64(n) * 3 / 2
	}
	rep.Goal = s.goal(rep.MinFree)
	if s.MaxSize > 0 && u.RepoSize > s.MaxSize {
		rep.Need = u.RepoSize - s.MaxSize
	}
	if rep.MinFree > 0 && u.Free < rep.MinFree {
		rep.Need = max(rep.Need, rep.MinFree-u.Free)
	}

	rank, near := make([]int, len(items)), make([]string, len(items))
	if s.order() == "age" {
		for i := range items {
			rank[i], near[i] = i+1, ""
		}
	} else {
		targets := s.Targets
		if len(targets) == 0 {
			targets = DefaultTargets
		}
		rankImportance(items, targets, now, loc, rank, near)
	}
	label := func(i int) string {
		if near[i] != "" {
			return "#" + strconv.Itoa(rank[i]) + " (near " + near[i] + ")"
		}
		return "#" + strconv.Itoa(rank[i])
	}

	if rep.Need > 0 && len(items) > 1 {
		factor := s.GuardFactor
		if factor == 0 {
			factor = 3
		}
		prev := make([]int64, 0, 10)
		for _, it := range items[1:min(11, len(items))] {
			prev = append(prev, it.rev.Added)
		}
		slices.Sort(prev)
		med := prev[len(prev)/2]
		if len(prev)%2 == 0 {
			med = (prev[len(prev)/2-1] + prev[len(prev)/2]) / 2
		}
		if factor > 0 && med > 0 && float64(items[0].rev.Added) > factor*float64(med) {
			rep.Guarded = true
			warn = append(warn, fmt.Sprintf("newest revision %s added %s, %.1f× the median %s of the %d before it: not deleting history to make room for it (check what changed, then prune with a goal that fits or --space-guard=-1)",
				items[0].rev.ID, formatBytes(items[0].rev.Added), float64(items[0].rev.Added)/float64(med), formatBytes(med), len(prev)))
		}
	}

	// Walk from the least important; the rule keeps whatever it does not
	// need to remove.
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return rank[b] - rank[a] })
	remove := make([]bool, len(items))
	if !rep.Guarded {
		for _, i := range order {
			if rep.Freed >= rep.Need {
				break
			}
			it := items[i]
			// A mounted revision is taken as any other and its removal
			// deferred (Apply): skipping it would remove a more important
			// one in its place, for good (QA).
			if i == 0 || it.keep || it.rev.Protected {
				continue
			}
			remove[i] = true
			rep.Freed += it.rev.freeable()
			l := label(i)
			it.gone = append(it.gone, Reason{Rule: s.order(), Period: l, Rank: rank[i],
				Text: "space: " + s.order() + " " + l + ", frees ~" + formatBytes(it.rev.freeable())})
		}
	}
	rep.Met = rep.Freed >= rep.Need
	if !rep.Met && !rep.Guarded {
		warn = append(warn, fmt.Sprintf("space goal %s not met: removing every revision the other rules and safety rails allow frees ~%s of %s needed",
			rep.Goal, formatBytes(rep.Freed), formatBytes(rep.Need)))
	}
	rule := s.order()
	for i, it := range items {
		if !remove[i] {
			it.keepFor(reason(rule, label(i)))
		}
	}
	return rep, warn
}

// rankImportance implements byteback's ordering: in rounds, each target age
// in turn claims the not yet ranked revision closest to now minus that age
// (ties go to the newer); claims are ranked 1, 2, 3, … in that order.
// Union-find "nearest unranked neighbour" links over the time-sorted
// revisions make each claim O(log n) instead of byteback's O(n), which took
// about a minute for 900 snapshots by its own account.
func rankImportance(items []*item, targets []Duration, now time.Time, loc *time.Location, rank []int, near []string) {
	n := len(items)
	// asc[k] = index in items of the k-th oldest revision.
	asc := make([]int, n)
	ts := make([]int64, n)
	for k := range asc {
		asc[k] = n - 1 - k
		ts[k] = items[asc[k]].rev.Time.UnixNano()
	}
	left, right := make([]int, n+2), make([]int, n+2) // union-find over positions, shifted by 1
	for i := range left {
		left[i], right[i] = i, i
	}
	tt := make([]int64, len(targets))
	names := make([]string, len(targets))
	for i, t := range targets {
		tt[i] = t.Before(now, loc).UnixNano()
		names[i] = t.String()
	}
	next := 1
	for next <= n {
		for ti := range targets {
			if next > n {
				break
			}
			pos := sort.Search(n, func(k int) bool { return ts[k] >= tt[ti] })
			r := find(right, pos+1) // first alive at or after pos (n+1 = none)
			l := find(left, pos)    // last alive before pos (0 = none)
			pick := -1
			switch {
			case r <= n && l >= 1:
				if ts[r-1]-tt[ti] <= tt[ti]-ts[l-1] {
					pick = r - 1
				} else {
					pick = l - 1
				}
			case r <= n:
				pick = r - 1
			default:
				pick = l - 1
			}
			rank[asc[pick]], near[asc[pick]] = next, names[ti]
			next++
			right[pick+1] = pick + 2
			left[pick+1] = pick
		}
	}
}

// find returns the representative of x with path halving.
func find(p []int, x int) int {
	for p[x] != x {
		p[x] = p[p[x]]
		x = p[x]
	}
	return x
}
