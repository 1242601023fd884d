package retention_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// restic's documented example: one backup every Sunday for 12 weeks;
// --keep-daily 4 keeps the last four Sundays.
func TestResticSundaysKeepDaily4(t *testing.T) {
	var revs []retention.Revision
	for i := 0; i < 12; i++ {
		revs = append(revs, rev(at(t, "2019-09-01T11:00").AddDate(0, 0, 7*i)))
	}
	p := apply(t, revs, retention.Policy{Daily: 4}, retention.Options{})
	sameSet(t, "kept", keptIDs(p), []string{"2019-10-27T11:00", "2019-11-03T11:00", "2019-11-10T11:00", "2019-11-17T11:00"})
	hasReason(t, p, "2019-11-03T11:00", "daily 2019-11-03")
	if n := len(p.Removed()); n != 8 {
		t.Errorf("removed %d, want 8", n)
	}
}

// restic's documented example: daily backups for 100 years and
// --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75.
// The last backup is Wednesday 2025-12-31, which lies in ISO week 2026-W01.
func TestResticHundredYears(t *testing.T) {
	var revs []retention.Revision
	for d := at(t, "1926-01-01T12:00"); !d.After(at(t, "2025-12-31T12:00")); d = d.AddDate(0, 0, 1) {
		revs = append(revs, rev(d))
	}
	p := apply(t, revs, retention.Policy{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75}, retention.Options{})
	var want []string
	// 7 dailies: Dec 25..31.
	for d := 25; d <= 31; d++ {
		want = append(want, fmt.Sprintf("2025-12-%02dT12:00", d))
	}
	// Weeklies: W01 (Dec 31), W52 (Sun Dec 28, a daily too), W51, W50, W49.
	want = append(want, "2025-12-21T12:00", "2025-12-14T12:00", "2025-12-07T12:00")
	// Monthlies: last days of Jan..Nov 2025 (December is Dec 31).
	for _, md := range []string{"01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30", "10-31", "11-30"} {
		want = append(want, "2025-"+md+"T12:00")
	}
	// Yearlies: Dec 31 of 1951..2024 (2025 is Dec 31).
	for y := 1951; y <= 2024; y++ {
		want = append(want, fmt.Sprintf("%d-12-31T12:00", y))
	}
	if len(want) != 95 {
		t.Fatalf("hand count %d, want 95", len(want))
	}
	sameSet(t, "kept", keptIDs(p), want)
	want31 := []string{"newest", "daily 2025-12-31", "weekly 2026-W01", "monthly 2025-12", "yearly 2025"}
	if got := reasonsOf(t, p, "2025-12-31T12:00"); fmt.Sprint(got) != fmt.Sprint(want31) {
		t.Errorf("reasons of the newest: %q, want %q", got, want31)
	}
	hasReason(t, p, "2025-12-28T12:00", "weekly 2025-W52")
}

// Two years of hourly commits with a combined GFS policy; yearly is
// unlimited, so the oldest revision is kept as well (restic).
func TestTwoYearsHourlyGFS(t *testing.T) {
	revs := series(at(t, "2024-11-21T00:00"), at(t, "2026-11-20T23:00"), time.Hour)
	if len(revs) != 730*24 {
		t.Fatalf("%d revisions", len(revs))
	}
	p := apply(t, revs, retention.Policy{Hourly: 24, Daily: 7, Weekly: 4, Monthly: 6, Yearly: retention.Unlimited}, retention.Options{})
	var want []string
	for h := 0; h < 24; h++ {
		want = append(want, fmt.Sprintf("2026-11-20T%02d:00", h))
	}
	for d := 14; d <= 20; d++ {
		want = append(want, fmt.Sprintf("2026-11-%02dT23:00", d))
	}
	// 2026-11-20 is a Friday in W47; Sundays close W46, W45, W44.
	want = append(want, "2026-11-15T23:00", "2026-11-08T23:00", "2026-11-01T23:00")
	want = append(want, "2026-10-31T23:00", "2026-09-30T23:00", "2026-08-31T23:00", "2026-07-31T23:00", "2026-06-30T23:00")
	want = append(want, "2025-12-31T23:00", "2024-12-31T23:00", "2024-11-21T00:00")
	sameSet(t, "kept", keptIDs(p), want)
	hasReason(t, p, "2024-11-21T00:00", "yearly 2024 (oldest)")
	hasReason(t, p, "2026-11-20T05:00", "hourly 2026-11-20 05:00Z")
}

// Daily commits with irregular gaps: only periods that have a revision count.
func TestIrregularGaps(t *testing.T) {
	var revs []retention.Revision
	for _, s := range []string{
		"2026-11-20T01:00", "2026-11-20T22:00", "2026-11-19T03:00", "2026-11-17T03:00", "2026-11-16T03:00",
		"2026-11-10T03:00", "2026-11-09T03:00", "2026-11-01T03:00", "2026-10-31T03:00", "2026-10-02T03:00",
		"2026-09-30T03:00", "2026-07-04T03:00", "2025-02-01T03:00",
	} {
		revs = append(revs, rev(at(t, s)))
	}
	tests := []struct {
		name string
		p    retention.Policy
		want []string
	}{
		{"daily 5", retention.Policy{Daily: 5},
			[]string{"2026-11-20T22:00", "2026-11-19T03:00", "2026-11-17T03:00", "2026-11-16T03:00", "2026-11-10T03:00"}},
		// W47 Nov 20, W46 (Nov 9-15) Nov 10, W45 empty, W44 (Oct 26-Nov 1) Nov 1.
		{"weekly 3", retention.Policy{Weekly: 3},
			[]string{"2026-11-20T22:00", "2026-11-10T03:00", "2026-11-01T03:00"}},
		// Nov, Oct, Sep, then August is empty so July counts.
		{"monthly 4", retention.Policy{Monthly: 4},
			[]string{"2026-11-20T22:00", "2026-10-31T03:00", "2026-09-30T03:00", "2026-07-04T03:00"}},
		// Only two years have revisions; the count is left over, so the
		// oldest revision stays too (it is 2025's newest anyway).
		{"yearly 5", retention.Policy{Yearly: 5},
			[]string{"2026-11-20T22:00", "2025-02-01T03:00"}},
		{"last 3", retention.Policy{Last: 3},
			[]string{"2026-11-20T22:00", "2026-11-20T01:00", "2026-11-19T03:00"}},
		{"within 4d", retention.Policy{Within: retention.Days(4)},
			[]string{"2026-11-20T22:00", "2026-11-20T01:00", "2026-11-19T03:00", "2026-11-17T03:00"}},
		{"within-weekly 3w", retention.Policy{WithinWeekly: retention.Duration{Weeks: 3}},
			[]string{"2026-11-20T22:00", "2026-11-10T03:00", "2026-11-01T03:00"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := apply(t, revs, tc.p, retention.Options{})
			sameSet(t, "kept", keptIDs(p), tc.want)
		})
	}
}

// While counts are left, restic keeps the oldest revision even when it
// shares its period with a kept one.
func TestOldestKeptWhileCountsLeft(t *testing.T) {
	revs := []retention.Revision{
		rev(at(t, "2026-11-18T08:00")), rev(at(t, "2026-11-18T09:00")),
		rev(at(t, "2026-11-19T10:00")), rev(at(t, "2026-11-20T10:00")),
	}
	p := apply(t, revs, retention.Policy{Daily: 5}, retention.Options{})
	sameSet(t, "daily 5", keptIDs(p), []string{"2026-11-18T08:00", "2026-11-18T09:00", "2026-11-19T10:00", "2026-11-20T10:00"})
	hasReason(t, p, "2026-11-18T08:00", "daily 2026-11-18 (oldest)")
	p = apply(t, revs, retention.Policy{Daily: 3}, retention.Options{})
	sameSet(t, "daily 3", keptIDs(p), []string{"2026-11-18T09:00", "2026-11-19T10:00", "2026-11-20T10:00"})
}

func TestLastAndUnlimited(t *testing.T) {
	revs := series(at(t, "2026-11-20T00:00"), at(t, "2026-11-20T04:00"), time.Hour)
	p := apply(t, revs, retention.Policy{Last: 2}, retention.Options{})
	sameSet(t, "last 2", keptIDs(p), []string{"2026-11-20T04:00", "2026-11-20T03:00"})
	hasReason(t, p, "2026-11-20T03:00", "last 2/2")
	p = apply(t, revs, retention.Policy{Last: retention.Unlimited}, retention.Options{})
	if len(p.Removed()) != 0 {
		t.Errorf("last unlimited removed %d", len(p.Removed()))
	}
	p = apply(t, revs, retention.Policy{Daily: retention.Unlimited}, retention.Options{})
	// One day: its newest, plus the oldest (counts are unlimited).
	sameSet(t, "daily unlimited", keptIDs(p), []string{"2026-11-20T04:00", "2026-11-20T00:00"})
}

// --keep-within counts back from the newest revision (not now), strictly
// after the cut; revisions in the future are always within.
func TestKeepWithin(t *testing.T) {
	revs := []retention.Revision{
		rev(at(t, "2025-09-17T07:00")),
		rev(at(t, "2025-09-17T08:00")), // exactly at the cut: goes
		rev(at(t, "2025-09-17T08:01")),
		rev(at(t, "2026-11-20T12:00")),
		rev(at(t, "2026-12-01T00:00")), // in the future
	}
	d := retention.MustParseDuration("1y2m3d4h")
	p := apply(t, revs, retention.Policy{Within: d}, retention.Options{Now: at(t, "2026-11-21T00:00")})
	sameSet(t, "kept", keptIDs(p), []string{"2025-09-17T08:01", "2026-11-20T12:00", "2026-12-01T00:00"})
	hasReason(t, p, "2025-09-17T08:01", "within 1y2m3d4h")
	// A volume whose backups stopped keeps its last days of history.
	p = apply(t, revs[:4], retention.Policy{Within: retention.Days(1)}, retention.Options{Now: at(t, "2027-06-01T00:00")})
	sameSet(t, "stopped", keptIDs(p), []string{"2026-11-20T12:00"})
}

func TestKeepWithinDaily(t *testing.T) {
	revs := series(at(t, "2026-11-16T00:00"), at(t, "2026-11-20T12:00"), time.Hour)
	p := apply(t, revs, retention.Policy{WithinDaily: retention.Days(3)}, retention.Options{})
	// Cut 2026-11-17 12:00: days 17 (23:00), 18, 19, 20 have revisions within.
	sameSet(t, "kept", keptIDs(p), []string{"2026-11-20T12:00", "2026-11-19T23:00", "2026-11-18T23:00", "2026-11-17T23:00"})
	hasReason(t, p, "2026-11-18T23:00", "within-daily 2026-11-18")
	p = apply(t, revs, retention.Policy{WithinHourly: retention.Hours(3)}, retention.Options{})
	sameSet(t, "hourly 3h", keptIDs(p), []string{"2026-11-20T12:00", "2026-11-20T11:00", "2026-11-20T10:00"})
}

func TestKeepTag(t *testing.T) {
	revs := []retention.Revision{
		rev(at(t, "2026-11-16T00:00"), "a"),
		rev(at(t, "2026-11-17T00:00"), "a", "b"),
		rev(at(t, "2026-11-18T00:00")),
		rev(at(t, "2026-11-19T00:00"), "b"),
		rev(at(t, "2026-11-20T00:00"), "c"),
	}
	tests := []struct {
		name string
		sets [][]string
		want []string
	}{
		{"a,b", [][]string{retention.ParseTagSet("a,b")}, []string{"2026-11-17T00:00", "2026-11-20T00:00"}},
		{"a or b", [][]string{{"a"}, {"b"}}, []string{"2026-11-16T00:00", "2026-11-17T00:00", "2026-11-19T00:00", "2026-11-20T00:00"}},
		{"untagged", [][]string{retention.ParseTagSet("")}, []string{"2026-11-18T00:00", "2026-11-20T00:00"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := apply(t, revs, retention.Policy{KeepTags: tc.sets}, retention.Options{})
			sameSet(t, "kept", keptIDs(p), tc.want)
		})
	}
	p := apply(t, revs, retention.Policy{KeepTags: [][]string{{"b"}}}, retention.Options{})
	hasReason(t, p, "2026-11-19T00:00", "tag:b")
}
