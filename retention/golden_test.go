package retention_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// render prints a plan as the prune table would: one line per decision
// (only kept ones when keptOnly), then a summary.
func render(p *retention.Plan, keptOnly bool, loc *time.Location) string {
	var b strings.Builder
	kept := 0
	for _, d := range p.Decisions {
		if d.Keep {
			kept++
		}
		if keptOnly && !d.Keep {
			continue
		}
		verdict := "keep"
		if !d.Keep {
			verdict = "drop"
		}
		var rs []string
		for _, r := range d.Reasons {
			rs = append(rs, r.Text)
		}
		fmt.Fprintf(&b, "%s %-16s %s %s  %s\n", d.Revision.Time.In(loc).Format("2006-01-02 15:04 MST"), d.Revision.ID, verdict,
			strings.Join(d.Revision.Tags, ","), strings.Join(rs, "; "))
	}
	fmt.Fprintf(&b, "-- %d revisions, %d kept, %d removed\n", len(p.Decisions), kept, len(p.Decisions)-kept)
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if p.Space != nil {
		fmt.Fprintf(&b, "space: %+v\n", *p.Space)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got: %s\nwant: %s\n(go test -update rewrites it after review)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d", path, len(gl), len(wl))
	}
}

func TestGoldenHourlyTwoYearsBerlin(t *testing.T) {
	loc := berlin(t)
	revs := series(at(t, "2024-11-21T00:00"), at(t, "2026-11-20T23:00"), time.Hour)
	p := apply(t, revs, retention.Policy{Hourly: 48, Daily: 14, Weekly: 8, Monthly: 24, Yearly: retention.Unlimited,
		WithinDaily: retention.Duration{Months: 1}}, retention.Options{Location: loc})
	golden(t, "hourly-2y-berlin", render(p, true, loc))
}

// Two years of daily scheduled commits at 02:00 Berlin time with runs
// missed at random, a few manual commits, pruned by the schedule.
func TestGoldenDailyTwoYearsSchedule(t *testing.T) {
	loc := berlin(t)
	s, err := retention.ParseScheduleSpec("daily=1d:7,weekly=1w:4,monthly=30d:12")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var revs []retention.Revision
	day := time.Date(2024, 11, 21, 2, 0, 0, 0, loc)
	for d := 0; d < 730; d++ {
		ts := day.AddDate(0, 0, d).Add(time.Duration(rng.IntN(30)) * time.Minute)
		if rng.IntN(10) == 0 {
			continue // machine off
		}
		r := rev(ts, s.Due(revs, ts, loc)...)
		if rng.IntN(50) == 0 {
			r.Tags = append(r.Tags, "manual")
		}
		revs = append(revs, r)
	}
	now := day.AddDate(0, 0, 729).Add(3 * time.Hour)
	p := apply(t, revs, retention.Policy{Schedule: &s, KeepTags: [][]string{{"manual"}}}, retention.Options{Now: now, Location: loc})
	golden(t, "daily-2y-schedule", render(p, false, loc))
}

func TestGoldenDailyTwoYearsHanoiAndSpace(t *testing.T) {
	revs := series(at(t, "2024-11-21T03:00"), at(t, "2026-11-20T03:00"), 24*time.Hour)
	rng := rand.New(rand.NewPCG(9, 9))
	var size int64
	for i := range revs {
		revs[i].Added = int64(50+rng.IntN(100)) << 20
		size += revs[i].Added
	}
	now := at(t, "2026-11-20T04:00")
	p := apply(t, revs, retention.Policy{Hanoi: &retention.Hanoi{Discs: 6, Archive: true}}, retention.Options{Now: now})
	golden(t, "daily-2y-hanoi", render(p, true, time.UTC))
	p = apply(t, revs, retention.Policy{Daily: 7, Space: &retention.Space{MaxSize: size / 10}}, retention.Options{Now: now, Usage: retention.Usage{RepoSize: size}})
	golden(t, "daily-2y-importance", render(p, true, time.UTC))
}
