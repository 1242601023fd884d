package retention_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// dailyAges returns n revisions, named a0 (now) … a<n-1> (n-1 days ago),
// each adding 10 bytes.
func dailyAges(t *testing.T, n int) (time.Time, []retention.Revision) {
	t.Helper()
	now := at(t, "2026-11-20T12:00")
	var revs []retention.Revision
	for i := n - 1; i >= 0; i-- {
		revs = append(revs, retention.Revision{ID: fmt.Sprintf("a%d", i), Time: now.AddDate(0, 0, -i), Added: 10})
	}
	return now, revs
}

func importanceRank(t *testing.T, p *retention.Plan) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range p.Decisions {
		for _, r := range d.Reasons {
			if r.Rule == "importance" {
				out[d.Revision.ID] = r.Period
			}
		}
	}
	return out
}

// byteback's ordering over 31 daily revisions, worked out by hand: round
// one claims the revisions nearest 0,1,2,3,7,14,21,28 days, then the oldest
// two for 56 and 112 days; round two starts again at "now".
func TestImportanceOrdering(t *testing.T) {
	now, revs := dailyAges(t, 31)
	p := apply(t, revs, retention.Policy{Space: &retention.Space{MaxSize: 1 << 40}}, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 310}})
	got := importanceRank(t, p)
	want := map[string]string{
		"a0": "#1 (near 0d)", "a1": "#2 (near 1d)", "a2": "#3 (near 2d)", "a3": "#4 (near 3d)",
		"a7": "#5 (near 7d)", "a14": "#6 (near 14d)", "a21": "#7 (near 21d)", "a28": "#8 (near 28d)",
		"a30": "#9 (near 56d)", "a29": "#10 (near 112d)",
		"a4": "#11 (near 0d)", "a5": "#12 (near 1d)", "a6": "#13 (near 2d)", "a8": "#14 (near 3d)",
		"a9": "#15 (near 7d)", "a13": "#16 (near 14d)", "a20": "#17 (near 21d)", "a27": "#18 (near 28d)",
		"a26": "#19 (near 56d)", "a25": "#20 (near 112d)",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: rank %q, want %q", id, got[id], w)
		}
	}
	if len(got) != 31 {
		t.Errorf("%d ranked, want 31", len(got))
	}
	if len(p.Removed()) != 0 || !p.Space.Met || p.Space.Need != 0 {
		t.Errorf("goal already met, yet removed %d / report %+v", len(p.Removed()), p.Space)
	}
}

// Eight revisions aged 0..7 days rank a0,a1,a2,a3,a7,a6,a5,a4; a space
// goal needing 30 bytes removes the three least important that may go.
func TestSpaceMaxSize(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(revs []retention.Revision)
		p      retention.Policy
		remove []string
	}{
		{"plain", nil, retention.Policy{}, []string{"a4", "a5", "a6"}},
		{"tag keeps a5", func(r []retention.Revision) { r[2].Tags = []string{"keep"} },
			retention.Policy{KeepTags: [][]string{{"keep"}}}, []string{"a4", "a6", "a7"}},
		{"protected a4", func(r []retention.Revision) { r[3].Protected = true }, retention.Policy{}, []string{"a5", "a6", "a7"}},
		// a4's removal is deferred (checked below), not replaced by a7's.
		{"mounted a4", func(r []retention.Revision) { r[3].Mounted = true }, retention.Policy{}, []string{"a5", "a6"}},
		{"freeable", func(r []retention.Revision) { r[3].Freeable = 30 }, retention.Policy{}, []string{"a4"}},
		{"daily 3 guarantees the newest three", nil, retention.Policy{Daily: 3}, []string{"a4", "a5", "a6"}},
		{"daily 6 guarantees six", nil, retention.Policy{Daily: 6}, []string{"a6", "a7"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now, revs := dailyAges(t, 8)
			if tc.mutate != nil {
				tc.mutate(revs)
			}
			pol := tc.p
			pol.Space = &retention.Space{MaxSize: 50}
			p := apply(t, revs, pol, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 80}})
			var got []string
			for _, r := range p.Removed() {
				got = append(got, r.ID)
			}
			sameSet(t, "removed", got, tc.remove)
			for _, d := range p.Decisions {
				if want := d.Revision.Mounted && d.Revision.ID == "a4"; d.Deferred != want {
					t.Errorf("%s: deferred %v, want %v", d.Revision.ID, d.Deferred, want)
				}
			}
			wantMet := tc.name != "daily 6 guarantees six"
			if p.Space.Met != wantMet || p.Space.Need != 30 {
				t.Errorf("report %+v, want need 30, met %v", p.Space, wantMet)
			}
			if !wantMet && (len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "not met")) {
				t.Errorf("warnings %q", p.Warnings)
			}
		})
	}
}

// The default free-space target: average added by the newest 10 plus 50%.
func TestSpaceAutoFree(t *testing.T) {
	now, revs := dailyAges(t, 12)
	for i := range revs {
		revs[i].Added = 100
		revs[i].Freeable = 20
	}
	p := apply(t, revs, retention.Policy{Space: &retention.Space{AutoFree: true}}, retention.Options{Now: now, Usage: retention.Usage{Free: 100}})
	if p.Space.MinFree != 150 || p.Space.Need != 50 {
		t.Fatalf("report %+v, want min free 150, need 50", p.Space)
	}
	// 12 revisions rank a0,a1,a2,a3,a7,a11(14d),a10(21d),a9(28d),a8,a6 | a4,a5:
	// the three least important are a5, a4, a6 (20 bytes each).
	var got []string
	for _, r := range p.Removed() {
		got = append(got, r.ID)
	}
	sameSet(t, "removed", got, []string{"a5", "a4", "a6"})
	hasReason(t, p, "a5", "space: importance #12 (near 1d), frees ~20 B")
}

// byteback's guard: a suddenly huge newest revision does not push out
// history.
func TestSpaceGuard(t *testing.T) {
	now, revs := dailyAges(t, 12)
	revs[len(revs)-1].Added = 1000 // a0, the newest
	pol := retention.Policy{Space: &retention.Space{MaxSize: 50}}
	p := apply(t, revs, pol, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 1110}})
	if len(p.Removed()) != 0 || !p.Space.Guarded {
		t.Fatalf("guard did not stop: removed %d, report %+v", len(p.Removed()), p.Space)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "100.0× the median 10 B") {
		t.Errorf("warnings %q", p.Warnings)
	}
	pol.Space.GuardFactor = -1
	p = apply(t, revs, pol, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 1110}})
	if len(p.Removed()) != 11 || p.Space.Guarded {
		t.Errorf("guard off: removed %d, report %+v", len(p.Removed()), p.Space)
	}
	// No need to free space, no warning.
	pol.Space.GuardFactor = 0
	p = apply(t, revs, pol, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 40}})
	if len(p.Warnings) != 0 || p.Space.Guarded {
		t.Errorf("goal met: warnings %q", p.Warnings)
	}
}

func TestSpaceAgeOrder(t *testing.T) {
	now, revs := dailyAges(t, 8)
	p := apply(t, revs, retention.Policy{Space: &retention.Space{MaxSize: 50, Order: "age"}}, retention.Options{Now: now, Usage: retention.Usage{RepoSize: 80}})
	var got []string
	for _, r := range p.Removed() {
		got = append(got, r.ID)
	}
	slices.Sort(got)
	sameSet(t, "removed", got, []string{"a7", "a6", "a5"})
	hasReason(t, p, "a4", "age #5")
}

// Custom target ages; an empty list means the defaults.
func TestSpaceTargets(t *testing.T) {
	now, revs := dailyAges(t, 8)
	opts := retention.Options{Now: now, Usage: retention.Usage{RepoSize: 80}}
	// Targets 0d, 5d: ranks a0, a5 | a1, a4 (tie a4/a6 → newer) | a2, a6 | a3, a7.
	p := apply(t, revs, retention.Policy{Space: &retention.Space{MaxSize: 50, Targets: []retention.Duration{retention.Days(0), retention.Days(5)}}}, opts)
	var got []string
	for _, r := range p.Removed() {
		got = append(got, r.ID)
	}
	sameSet(t, "removed", got, []string{"a7", "a3", "a6"})
	p = apply(t, revs, retention.Policy{Space: &retention.Space{MaxSize: 50, Targets: []retention.Duration{}}}, opts)
	got = got[:0]
	for _, r := range p.Removed() {
		got = append(got, r.ID)
	}
	sameSet(t, "defaults", got, []string{"a4", "a5", "a6"})
}
