package retention_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

func TestHanoiSlots(t *testing.T) {
	tests := []struct {
		discs int
		want  []int
	}{
		{1, []int{0, 0, 0, 0}},
		{4, []int{0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 3}},
		{5, []int{0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4}},
	}
	for _, tc := range tests {
		h := retention.Hanoi{Discs: tc.discs}
		var got []int
		for p := int64(0); p < int64(len(tc.want)); p++ {
			got = append(got, h.Slot(p))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("discs %d: slots %v, want %v", tc.discs, got, tc.want)
		}
		// Periods before the epoch wrap like the ones after it.
		cycle := int64(1) << (tc.discs - 1)
		if a, b := h.Slot(-1), h.Slot(cycle-1); a != b {
			t.Errorf("discs %d: slot of period -1 = %d, of %d = %d", tc.discs, a, cycle-1, b)
		}
	}
}

// hanoiAges runs a daily timeline that starts at a cycle boundary and ends
// at position end within the 16-day cycle of 5 discs; it returns the kept
// ages in days.
func hanoiAges(t *testing.T, h retention.Hanoi, end int) []int {
	t.Helper()
	start := at(t, "2025-11-24T12:00")
	if d := start.Unix() / 86400; d%16 != 0 {
		t.Fatalf("2025-11-24 is epoch day %d, not a multiple of 16", d)
	}
	last := start.AddDate(0, 0, 32+end)
	var revs []retention.Revision
	for d := start; !d.After(last); d = d.AddDate(0, 0, 1) {
		revs = append(revs, rev(d))
	}
	p := apply(t, revs, retention.Policy{Hanoi: &h}, retention.Options{})
	var ages []int
	for _, r := range p.Kept() {
		ages = append(ages, int(last.Sub(r.Time).Hours()/24))
	}
	slices.Sort(ages)
	return ages
}

// Five discs: ages spread as powers of two, the oldest 8 to 15 days old.
func TestHanoiAges(t *testing.T) {
	h := retention.Hanoi{Discs: 5}
	for _, tc := range []struct {
		end  int
		want []int
	}{
		{15, []int{0, 1, 2, 4, 8}},
		{0, []int{0, 1, 3, 5, 9}},
		{7, []int{0, 1, 2, 4, 8}},
		{8, []int{0, 1, 3, 5, 9}},
		{10, []int{0, 1, 3, 7, 11}},
		{14, []int{0, 1, 3, 7, 15}},
	} {
		if got := hanoiAges(t, h, tc.end); !slices.Equal(got, tc.want) {
			t.Errorf("end at cycle day %d: ages %v, want %v", tc.end+1, got, tc.want)
		}
	}
}

// ArchiveOldestDisc: every last-disc revision stays, one per 16 days.
func TestHanoiArchive(t *testing.T) {
	got := hanoiAges(t, retention.Hanoi{Discs: 5, Archive: true}, 15)
	// 32+15 = 47 days of history: archives at ages 0, 16, 32 (day 47-48 is
	// before the start), recent discs at 1, 2, 4, 8.
	if want := []int{0, 1, 2, 4, 8, 16, 32}; !slices.Equal(got, want) {
		t.Errorf("archive ages %v, want %v", got, want)
	}
}

// Only the newest revision of a period counts; a 6-hour period uses
// elapsed time.
func TestHanoiPeriods(t *testing.T) {
	var revs []retention.Revision
	for d := at(t, "2026-01-01T06:00"); d.Before(at(t, "2026-01-05T00:00")); d = d.Add(12 * time.Hour) {
		revs = append(revs, rev(d))
	}
	p := apply(t, revs, retention.Policy{Hanoi: &retention.Hanoi{Discs: 2}}, retention.Options{})
	// Two discs, cycle of 2 days: epoch day 20454 (Jan 1) is even → disc 1,
	// Jan 2 disc 2, Jan 3 disc 1, Jan 4 disc 2: keep the 18:00 of Jan 4 and Jan 3.
	sameSet(t, "2 discs", keptIDs(p), []string{"2026-01-04T18:00", "2026-01-03T18:00"})
	rs := reasonsOf(t, p, "2026-01-04T06:00")
	if len(rs) != 1 || !strings.Contains(rs[0], "same period") {
		t.Errorf("morning revision reasons %q", rs)
	}
	hasReason(t, p, "2026-01-02T18:00", "hanoi disc 2 reused by 2026-01-04T18:00")

	var six []retention.Revision
	for d := at(t, "2025-12-31T00:00"); !d.After(at(t, "2026-01-01T18:00")); d = d.Add(6 * time.Hour) {
		six = append(six, rev(d))
	}
	every, err := retention.ParseDuration("6h")
	if err != nil {
		t.Fatal(err)
	}
	p = apply(t, six, retention.Policy{Hanoi: &retention.Hanoi{Discs: 3, Every: every}}, retention.Options{})
	// Period 2026-01-01T00:00 = 81816 ≡ 0 (mod 4); 18:00 is the 4th (disc 3),
	// 12:00 the 3rd (disc 1), 06:00 the 2nd (disc 2).
	sameSet(t, "6h periods", keptIDs(p), []string{"2026-01-01T18:00", "2026-01-01T12:00", "2026-01-01T06:00"})
}
