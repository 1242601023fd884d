package retention_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

func defaultSchedule(t *testing.T) retention.Schedule {
	t.Helper()
	s, err := retention.ParseScheduleSpec("monthly=30d:12,daily=1d:7,weekly=1w:4")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Daily runs at 02:00; the machine is off on days 10 to 14. Each interval
// is due once after the gap; nothing is back-filled.
func TestScheduleDueAcrossMissedRuns(t *testing.T) {
	s := defaultSchedule(t)
	if got := s.Tags(); !slices.Equal(got, []string{"daily", "weekly", "monthly"}) {
		t.Fatalf("tags in order: %v", got)
	}
	day0 := at(t, "2026-01-01T02:00")
	var revs []retention.Revision
	got := map[int][]string{}
	for d := 0; d <= 40; d++ {
		if d >= 10 && d <= 14 {
			continue
		}
		ts := day0.AddDate(0, 0, d)
		due := s.Due(revs, ts, nil)
		got[d] = due
		revs = append(revs, rev(ts, due...))
	}
	want := map[int][]string{
		0:  {"daily", "weekly", "monthly"},
		1:  {"daily"},
		7:  {"daily", "weekly"},
		9:  {"daily"},
		15: {"daily", "weekly"}, // first run after the gap: weekly last on day 7
		16: {"daily"},
		21: {"daily"},
		22: {"daily", "weekly"},
		29: {"daily", "weekly"},
		30: {"daily", "monthly"},
		36: {"daily", "weekly"},
	}
	for d, w := range want {
		if !slices.Equal(got[d], w) {
			t.Errorf("day %d: due %v, want %v", d, got[d], w)
		}
	}
	weekly := 0
	for _, r := range revs {
		if slices.Contains(r.Tags, "weekly") {
			weekly++
		}
	}
	if weekly != 6 { // days 0, 7, 15, 22, 29, 36
		t.Errorf("%d weekly revisions, want 6", weekly)
	}
}

func TestScheduleDueTolerance(t *testing.T) {
	s := defaultSchedule(t)
	last := at(t, "2026-01-02T02:00")
	revs := []retention.Revision{rev(last, "daily", "weekly", "monthly")}
	tests := []struct {
		at   string
		want []string
	}{
		{"2026-01-03T01:59", []string{"daily"}}, // a minute early: due
		{"2026-01-03T01:00", []string{"daily"}}, // 23 h: within the 1 h tolerance
		{"2026-01-02T14:00", nil},               // same day again: not due
		{"2026-01-03T00:59", nil},               // 22:59 h: too early
		{"2026-01-08T02:00", []string{"daily"}}, // 6 days
		{"2026-01-09T01:30", []string{"daily", "weekly"}},
		{"2026-01-31T02:00", []string{"daily", "weekly"}}, // 29 days: monthly not due yet
		{"2026-02-01T01:10", []string{"daily", "weekly", "monthly"}},
		{"2025-12-31T02:00", []string{"daily"}}, // back-dated, 2 days before
		{"2026-01-01T14:00", nil},               // back-dated, 12 h before
	}
	for _, tc := range tests {
		if got := s.Due(revs, at(t, tc.at), time.UTC); !slices.Equal(got, tc.want) {
			t.Errorf("Due at %s = %v, want %v", tc.at, got, tc.want)
		}
	}
}

// 100 days of scheduled commits at 02:00 plus up to 40 minutes of jitter,
// then a prune with the schedule alone.
func TestScheduleExpiry(t *testing.T) {
	s := defaultSchedule(t)
	rng := rand.New(rand.NewPCG(5, 5))
	day0 := at(t, "2026-01-01T02:00")
	var revs []retention.Revision
	for d := 0; d < 100; d++ {
		ts := day0.AddDate(0, 0, d).Add(time.Duration(rng.IntN(40)) * time.Minute)
		r := rev(ts, s.Due(revs, ts, nil)...)
		r.ID = fmt.Sprintf("d%02d", d)
		revs = append(revs, r)
	}
	for _, d := range []int{0, 30, 60, 90} {
		if !slices.Contains(revs[d].Tags, "monthly") {
			t.Fatalf("day %d lacks monthly: %v", d, revs[d].Tags)
		}
	}
	now := day0.AddDate(0, 0, 99).Add(time.Hour) // 03:00 on day 99
	p := apply(t, revs, retention.Policy{Schedule: &s}, retention.Options{Now: now})
	// daily: newest 7 (93..99; day 92 is older than now-7d); weekly: newest
	// 4 of 0,7,…,98 = 77,84,91,98; monthly: all of 0,30,60,90.
	var want []string
	for _, d := range []int{93, 94, 95, 96, 97, 98, 99, 77, 84, 91, 0, 30, 60, 90} {
		want = append(want, fmt.Sprintf("d%02d", d))
	}
	sameSet(t, "kept", keptIDs(p), want)
	hasReason(t, p, "d95", "schedule daily 5/7")
	hasReason(t, p, "d84", "schedule weekly 3/4")
	hasReason(t, p, "d00", "schedule monthly 4/12")
	hasReason(t, p, "d70", "schedule tags expired: daily, weekly")
}

// backy's guard: a burst of commits does not expire tags younger than
// keep × interval; manual revisions without schedule tags are left to
// other rules.
func TestScheduleBurstAndManual(t *testing.T) {
	s, err := retention.ParseScheduleSpec("daily=1d:3")
	if err != nil {
		t.Fatal(err)
	}
	t0 := at(t, "2026-11-01T10:00")
	var revs []retention.Revision
	for i := 0; i < 6; i++ {
		revs = append(revs, rev(t0.Add(time.Duration(i)*time.Minute), "daily"))
	}
	manual := rev(t0.Add(-time.Hour), "before-upgrade")
	revs = append(revs, manual)

	p := apply(t, revs, retention.Policy{Schedule: &s, KeepTags: [][]string{{"before-upgrade"}}}, retention.Options{Now: t0.Add(2 * time.Hour)})
	if n := len(p.Removed()); n != 0 {
		t.Errorf("burst: removed %d, want 0", n)
	}
	hasReason(t, p, idOf(t0), "schedule daily 6/3, younger than 3d")

	p, err = retention.Apply(revs, retention.Policy{Schedule: &s}, retention.Options{Now: t0.AddDate(0, 0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, revs, p)
	sameSet(t, "after 4 days", keptIDs(p), []string{idOf(t0.Add(5 * time.Minute)), idOf(t0.Add(4 * time.Minute)), idOf(t0.Add(3 * time.Minute))})
	hasReason(t, p, manual.ID, "no schedule tag")
}

func TestParseScheduleSpecErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"daily=1x:7", `unknown unit x in duration "1x"`},
		{"daily1d7", "use TAG=INTERVAL:KEEP"},
		{"daily=1d:0", "keep of \"daily\" must be at least 1"},
		{"daily=1d:7,daily=2d:3", "given twice"},
		{"daily=0d:7", "must be positive"},
		{"", "no intervals"},
		{"daily=1d:x", "is not a number"},
	}
	for _, tc := range tests {
		_, err := retention.ParseScheduleSpec(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseScheduleSpec(%q) = %v, want error containing %q", tc.spec, err, tc.want)
		}
	}
}

func TestScheduleJSON(t *testing.T) {
	data := []byte(`{
	  "default":  {"daily": {"interval": "1d", "keep": 7}, "weekly": {"interval": "1w", "keep": 4},
	               "monthly": {"interval": "30d", "keep": 3}},
	  "frequent": {"hourly": {"interval": "1h", "keep": 24}, "daily": {"interval": "1d", "keep": 7},
	               "weekly": {"interval": "1w", "keep": 12}}}`)
	m, err := retention.ParseSchedules(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := m["default"].String(); got != "daily=1d:7,weekly=1w:4,monthly=30d:3" {
		t.Errorf("default = %s", got)
	}
	if got := m["frequent"].String(); got != "hourly=1h:24,daily=1d:7,weekly=1w:12" {
		t.Errorf("frequent = %s", got)
	}
	out, err := json.Marshal(m["default"])
	if err != nil {
		t.Fatal(err)
	}
	var back retention.Schedule
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if back.String() != m["default"].String() {
		t.Errorf("round trip: %s → %s → %s", m["default"], out, back)
	}
	for _, bad := range []string{
		`{"x": {"daily": {"interval": "1q", "keep": 7}}}`,
		`{"x": {"daily": {"interval": "1d", "keep": 0}}}`,
		`{"x": {"daily": {"every": "1d", "keep": 7}}}`,
	} {
		if _, err := retention.ParseSchedules([]byte(bad)); err == nil {
			t.Errorf("ParseSchedules(%s) accepted", bad)
		}
	}
}
