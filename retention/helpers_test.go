package retention_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// idOf names a revision by its UTC time, so expected sets read as times.
func idOf(t time.Time) string { return t.UTC().Format("2006-01-02T15:04") }

func rev(t time.Time, tags ...string) retention.Revision {
	return retention.Revision{ID: idOf(t), Time: t, Tags: tags}
}

// at parses "2006-01-02T15:04" in UTC.
func at(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse("2006-01-02T15:04", s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// series returns revisions from first to last (inclusive) every step.
func series(first, last time.Time, step time.Duration) []retention.Revision {
	var out []retention.Revision
	for t := first; !t.After(last); t = t.Add(step) {
		out = append(out, rev(t))
	}
	return out
}

func berlin(tb testing.TB) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		tb.Fatalf("time zone data: %v", err)
	}
	return loc
}

func apply(tb testing.TB, revs []retention.Revision, p retention.Policy, o retention.Options) *retention.Plan {
	tb.Helper()
	if o.Now.IsZero() {
		o.Now = revs[len(revs)-1].Time.Add(time.Minute)
		for _, r := range revs {
			if r.Time.After(o.Now) {
				o.Now = r.Time.Add(time.Minute)
			}
		}
	}
	plan, err := retention.Apply(revs, p, o)
	if err != nil {
		tb.Fatalf("Apply(%s): %v", p, err)
	}
	checkInvariants(tb, revs, plan)
	return plan
}

func keptIDs(p *retention.Plan) []string {
	var ids []string
	for _, r := range p.Kept() {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	return ids
}

func sameSet(tb testing.TB, what string, got, want []string) {
	tb.Helper()
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	want = slices.Compact(want)
	if slices.Equal(got, want) {
		return
	}
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	tb.Errorf("%s: got %d, want %d\n  missing: %v\n  extra:   %v", what, len(got), len(want), missing, extra)
}

// reasonsOf returns the reason texts of the revision with id.
func reasonsOf(tb testing.TB, p *retention.Plan, id string) []string {
	tb.Helper()
	for _, d := range p.Decisions {
		if d.Revision.ID == id {
			var out []string
			for _, r := range d.Reasons {
				out = append(out, r.Text)
			}
			return out
		}
	}
	tb.Fatalf("no decision for %s", id)
	return nil
}

func hasReason(tb testing.TB, p *retention.Plan, id, text string) {
	tb.Helper()
	rs := reasonsOf(tb, p, id)
	if !slices.Contains(rs, text) {
		tb.Errorf("%s: reasons %q lack %q", id, rs, text)
	}
}

// checkInvariants holds for every plan: one decision per revision, newest
// first; the newest, protected and mounted revisions stay; every decision
// has a reason; deferred means mounted.
func checkInvariants(tb testing.TB, revs []retention.Revision, p *retention.Plan) {
	tb.Helper()
	if len(p.Decisions) != len(revs) {
		tb.Fatalf("%d decisions for %d revisions", len(p.Decisions), len(revs))
	}
	newest := revs[0]
	for _, r := range revs {
		if r.Time.After(newest.Time) {
			newest = r
		}
	}
	seen := map[string]bool{}
	for i, d := range p.Decisions {
		if seen[d.Revision.ID] {
			tb.Fatalf("revision %s decided twice", d.Revision.ID)
		}
		seen[d.Revision.ID] = true
		if i > 0 && d.Revision.Time.After(p.Decisions[i-1].Revision.Time) {
			tb.Fatalf("decisions not newest first at %d", i)
		}
		if len(d.Reasons) == 0 {
			tb.Errorf("%s: no reason (keep=%v)", d.Revision.ID, d.Keep)
		}
		if d.Revision.Time.Equal(newest.Time) && i == 0 && !d.Keep {
			tb.Errorf("newest %s removed", d.Revision.ID)
		}
		if d.Revision.Protected && !d.Keep {
			tb.Errorf("protected %s removed", d.Revision.ID)
		}
		if d.Revision.Mounted && !d.Keep {
			tb.Errorf("mounted %s removed", d.Revision.ID)
		}
		if d.Deferred && !d.Revision.Mounted {
			tb.Errorf("%s deferred but not mounted", d.Revision.ID)
		}
		if d.Keep {
			for _, r := range d.Reasons {
				if r.Text == "" || r.Rule == "" {
					tb.Errorf("%s: empty reason %+v", d.Revision.ID, r)
				}
			}
		}
	}
	if !p.Decisions[0].Keep || !strings.Contains(p.Decisions[0].Reasons[0].Text, "newest") {
		tb.Errorf("first decision %s is not kept as newest: %v", p.Decisions[0].Revision.ID, p.Decisions[0].Reasons)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
