package retention_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

func TestParseDuration(t *testing.T) {
	good := []struct {
		in   string
		want retention.Duration
		str  string
	}{
		{"7d", retention.Duration{Days: 7}, "7d"},
		{"36h", retention.Duration{Hours: 36}, "36h"},
		{"2w", retention.Duration{Weeks: 2}, "2w"},
		{"90m", retention.Duration{Months: 90}, "90m"},
		{"1y2m3d4h", retention.Duration{Years: 1, Months: 2, Days: 3, Hours: 4}, "1y2m3d4h"},
		{"4h1y", retention.Duration{Years: 1, Hours: 4}, "1y4h"},
		{" 1Y ", retention.Duration{Years: 1}, "1y"},
		{"0d", retention.Duration{}, "0d"},
	}
	for _, tc := range good {
		got, err := retention.ParseDuration(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseDuration(%q) = %+v (%s), %v; want %+v (%s)", tc.in, got, got, err, tc.want, tc.str)
		}
	}
	bad := []struct{ in, want string }{
		{"7x", `unknown unit x in duration "7x"; use h, d, w, m (months), y`},
		{"90min", `unknown unit min in duration "90min"`},
		{"", "empty duration"},
		{"7", `missing unit after 7 in duration "7"`},
		{"d", `missing number before "d" in duration "d"`},
		{"-7d", `negative duration "-7d"`},
		{"7d2d", `unit d given twice in duration "7d2d"`},
		{"1.5d", `unexpected "." after 1 in duration "1.5d"`},
		{"99999999d", "too large"},
	}
	for _, tc := range bad {
		_, err := retention.ParseDuration(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseDuration(%q) error %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestDurationCalendar(t *testing.T) {
	loc := berlin(t)
	end := time.Date(2026, 10, 25, 12, 0, 0, 0, loc)
	if got := retention.Days(1).Before(end, loc); end.Sub(got) != 25*time.Hour {
		t.Errorf("1d before %v is %v (%v), want 25h earlier", end, got, end.Sub(got))
	}
	if got := retention.Hours(24).Before(end, loc); end.Sub(got) != 24*time.Hour {
		t.Errorf("24h before is %v earlier", end.Sub(got))
	}
	mar31 := time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)
	if got := (retention.Duration{Months: 1}).Before(mar31, time.UTC); !got.Equal(time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)) {
		// time.AddDate normalises Feb 31 to Mar 3, as restic does.
		t.Errorf("1m before Mar 31 = %v", got)
	}
	var d retention.Duration
	if err := d.UnmarshalText([]byte("2w3d")); err != nil || d.String() != "2w3d" {
		t.Errorf("UnmarshalText: %v %v", d, err)
	}
}

func TestParseCountAndSize(t *testing.T) {
	for in, want := range map[string]int{"unlimited": -1, "all": -1, "-1": -1, "0": 0, "7": 7} {
		if got, err := retention.ParseCount(in); err != nil || got != want {
			t.Errorf("ParseCount(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"-2", "x", ""} {
		if _, err := retention.ParseCount(in); err == nil {
			t.Errorf("ParseCount(%q) accepted", in)
		}
	}
	for in, want := range map[string]int64{"4096": 4096, "500M": 500 << 20, "10GiB": 10 << 30, "1.5T": 3 << 39, "2k": 2048, "1 GB": 1 << 30} {
		if got, err := retention.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10X", "G", "1e99P"} {
		if _, err := retention.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (retention.Policy{}).Validate(); !errors.Is(err, retention.ErrEmptyPolicy) {
		t.Errorf("empty policy: %v", err)
	}
	tests := []struct {
		name string
		p    retention.Policy
		opts []string // PolicyError options expected, in order
	}{
		{"negative count", retention.Policy{Daily: -2}, []string{"--keep-daily"}},
		{"empty tag", retention.Policy{KeepTags: [][]string{{"a", ""}}}, []string{"--keep-tag"}},
		{"free twice", retention.Policy{Space: &retention.Space{MinFree: 10, AutoFree: true}}, []string{"--min-free"}},
		{"space without goal", retention.Policy{Space: &retention.Space{}}, []string{"--max-size/--min-free"}},
		{"space order", retention.Policy{Space: &retention.Space{MaxSize: 1, Order: "size"}}, []string{"--space-order"}},
		{"guard", retention.Policy{Space: &retention.Space{MaxSize: 1, GuardFactor: 0.5}}, []string{"--space-guard"}},
		{"hanoi", retention.Policy{Hanoi: &retention.Hanoi{Discs: 0, Every: retention.Duration{Months: 1}}}, []string{"--hanoi", "--hanoi-every"}},
		{"schedule", retention.Policy{Schedule: &retention.Schedule{Name: "x", Intervals: []retention.Interval{{Tag: "d", Keep: 0, Every: retention.Days(1)}}}}, []string{"--schedule x"}},
		{"several", retention.Policy{Last: -5, Hourly: -3}, []string{"--keep-last", "--keep-hourly"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var pe *retention.PolicyError
				if !errors.As(e, &pe) {
					t.Fatalf("%v is no *PolicyError", e)
				}
				got = append(got, pe.Option)
			}
			if strings.Join(got, " ") != strings.Join(tc.opts, " ") {
				t.Errorf("options %q, want %q (%v)", got, tc.opts, err)
			}
		})
	}
	ok := retention.Policy{Daily: 7, Weekly: retention.Unlimited, Within: retention.Days(2), KeepTags: [][]string{{}},
		Hanoi: &retention.Hanoi{Discs: 5}, Space: &retention.Space{AutoFree: true}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid policy rejected: %v", err)
	}
	if s := ok.String(); s != "keep 7 daily, all weekly; all within 2d of the newest; untagged; hanoi 5 discs every 1d; space: free ≥ 1.5 × average added by importance" {
		t.Errorf("String = %q", s)
	}
}

func TestApplyErrors(t *testing.T) {
	revs := series(at(t, "2026-11-18T00:00"), at(t, "2026-11-20T00:00"), 24*time.Hour)
	opts := retention.Options{Now: at(t, "2026-11-21T00:00")}
	if _, err := retention.Apply(nil, retention.Policy{Last: 1}, opts); !errors.Is(err, retention.ErrNoRevisions) {
		t.Errorf("no revisions: %v", err)
	}
	if _, err := retention.Apply(revs, retention.Policy{}, opts); !errors.Is(err, retention.ErrEmptyPolicy) {
		t.Errorf("empty: %v", err)
	}
	p, err := retention.Apply(revs, retention.Policy{KeepTags: [][]string{{"nonexistent"}}}, opts)
	if !errors.Is(err, retention.ErrRemovesAll) || p == nil {
		t.Fatalf("removes all: %v", err)
	}
	if !strings.Contains(err.Error(), "tag nonexistent matches none of the 3 revisions") {
		t.Errorf("message: %v", err)
	}
	opts.Force = true
	p, err = retention.Apply(revs, retention.Policy{KeepTags: [][]string{{"nonexistent"}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, revs, p)
	sameSet(t, "forced", keptIDs(p), []string{"2026-11-20T00:00"})
	if got := reasonsOf(t, p, "2026-11-19T00:00"); len(got) != 1 || got[0] != "no rule keeps it" {
		t.Errorf("removed reasons %q", got)
	}
}

func TestSafetyRails(t *testing.T) {
	revs := series(at(t, "2026-11-16T00:00"), at(t, "2026-11-20T00:00"), 24*time.Hour)
	revs[0].Protected = true
	revs[1].Mounted = true
	revs[2].Mounted = true
	revs[4].Mounted = true // the newest: kept anyway, not deferred
	p := apply(t, revs, retention.Policy{Last: 1, Daily: 3}, retention.Options{})
	sameSet(t, "kept", keptIDs(p), []string{"2026-11-16T00:00", "2026-11-17T00:00", "2026-11-18T00:00", "2026-11-19T00:00", "2026-11-20T00:00"})
	for _, d := range p.Decisions {
		wantDeferred := d.Revision.ID == "2026-11-17T00:00"
		if d.Deferred != wantDeferred {
			t.Errorf("%s deferred=%v", d.Revision.ID, d.Deferred)
		}
	}
	hasReason(t, p, "2026-11-16T00:00", "protected")
	hasReason(t, p, "2026-11-17T00:00", "mounted or served: removal deferred")
	if got := reasonsOf(t, p, "2026-11-20T00:00"); strings.Join(got, "|") != "newest|last 1/1|daily 2026-11-20" {
		t.Errorf("newest reasons %q", got)
	}
}
