package retention_test

import (
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin even without system zone files

	"github.com/strata-backup/strata/retention"
)

// DST ends in Berlin on 2026-10-25: 03:00 CEST becomes 02:00 CET, so the
// local day has 25 hours and the 02:xx hour happens twice.
func TestBerlinFallBack(t *testing.T) {
	loc := berlin(t)
	revs := series(at(t, "2026-10-23T00:00"), at(t, "2026-10-26T12:00"), time.Hour)

	// Newest of each local day: 13:00 CET on the 26th, 23:00 CET on the
	// 25th (22:00Z), 23:00 CEST on the 24th (21:00Z).
	p := apply(t, revs, retention.Policy{Daily: 3}, retention.Options{Location: loc})
	sameSet(t, "Berlin daily 3", keptIDs(p), []string{"2026-10-26T12:00", "2026-10-25T22:00", "2026-10-24T21:00"})
	hasReason(t, p, "2026-10-25T22:00", "daily 2026-10-25")
	// The same in UTC for contrast.
	p = apply(t, revs, retention.Policy{Daily: 3}, retention.Options{})
	sameSet(t, "UTC daily 3", keptIDs(p), []string{"2026-10-26T12:00", "2026-10-25T23:00", "2026-10-24T23:00"})

	// --keep-within 1d from 2026-10-25 12:00 CET reaches back to 12:00 CEST
	// the day before: 25 hours, so 25 hourly revisions.
	win := series(at(t, "2026-10-23T00:00"), at(t, "2026-10-25T11:00"), time.Hour)
	p = apply(t, win, retention.Policy{Within: retention.Days(1)}, retention.Options{Location: loc})
	if n := len(p.Kept()); n != 25 {
		t.Errorf("within 1d across the 25-hour day kept %d, want 25", n)
	}

	// The repeated hour is two hours: 02:xx CEST and 02:xx CET.
	half := series(at(t, "2026-10-24T23:30"), at(t, "2026-10-25T02:00"), 30*time.Minute)
	p = apply(t, half, retention.Policy{Hourly: 3}, retention.Options{Location: loc})
	// 03:00 CET (02:00Z), 02:30 CET (01:30Z), 02:30 CEST (00:30Z).
	sameSet(t, "hourly 3", keptIDs(p), []string{"2026-10-25T02:00", "2026-10-25T01:30", "2026-10-25T00:30"})
	hasReason(t, p, "2026-10-25T01:30", "hourly 2026-10-25 02:00+01:00")
	hasReason(t, p, "2026-10-25T00:30", "hourly 2026-10-25 02:00+02:00")
}

// DST starts in Berlin on 2026-03-29: 02:00 CET becomes 03:00 CEST, a
// 23-hour day.
func TestBerlinSpringForward(t *testing.T) {
	loc := berlin(t)
	revs := series(at(t, "2026-03-27T00:00"), at(t, "2026-03-29T10:00"), time.Hour)
	p := apply(t, revs, retention.Policy{Within: retention.Days(1)}, retention.Options{Location: loc})
	if n := len(p.Kept()); n != 23 {
		t.Errorf("within 1d across the 23-hour day kept %d, want 23", n)
	}
	p = apply(t, revs, retention.Policy{Within: retention.Days(1)}, retention.Options{})
	if n := len(p.Kept()); n != 24 {
		t.Errorf("within 1d in UTC kept %d, want 24", n)
	}
	// Local days: 29th newest 12:00 CEST (10:00Z); 28th ends 23:00 CET (22:00Z).
	p = apply(t, revs, retention.Policy{Daily: 2}, retention.Options{Location: loc})
	sameSet(t, "daily 2", keptIDs(p), []string{"2026-03-29T10:00", "2026-03-28T22:00"})
}

// ISO weeks: 2025-12-31 belongs to 2026-W01; weeks start on Monday local time.
func TestISOWeeksInZone(t *testing.T) {
	loc := berlin(t)
	revs := []retention.Revision{
		rev(at(t, "2025-12-28T22:30")), // Sunday 23:30 CET: W52
		rev(at(t, "2025-12-28T23:30")), // Monday 00:30 CET: 2026-W01
		rev(at(t, "2025-12-31T12:00")), // Wednesday: 2026-W01
	}
	p := apply(t, revs, retention.Policy{Weekly: 2}, retention.Options{Location: loc})
	sameSet(t, "Berlin weekly", keptIDs(p), []string{"2025-12-31T12:00", "2025-12-28T22:30"})
	hasReason(t, p, "2025-12-31T12:00", "weekly 2026-W01")
	hasReason(t, p, "2025-12-28T22:30", "weekly 2025-W52")
	// In UTC the Monday-00:30-Berlin revision is still Sunday.
	p = apply(t, revs, retention.Policy{Weekly: 2}, retention.Options{})
	sameSet(t, "UTC weekly", keptIDs(p), []string{"2025-12-31T12:00", "2025-12-28T23:30"})
}
