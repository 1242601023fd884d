package retention_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/strata-backup/strata/retention"
)

// How cmd/strata drives a prune: parse the flags into a Policy, Apply it
// with the clock and zone, print the decisions, remove Plan.Removed().
// Note rev2: exactly 2 days older than the newest is not "within 2d".
func ExampleApply() {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	var revs []retention.Revision
	for i := 9; i >= 0; i-- {
		revs = append(revs, retention.Revision{ID: fmt.Sprintf("rev%d", i), Time: now.AddDate(0, 0, -i).Add(-time.Hour)})
	}
	revs[0].Protected = true           // rev9
	revs[5].Tags = []string{"release"} // rev4

	within, err := retention.ParseDuration("2d")
	if err != nil {
		panic(err)
	}
	p := retention.Policy{Weekly: 2, Within: within, KeepTags: [][]string{retention.ParseTagSet("release")}}
	plan, err := retention.Apply(revs, p, retention.Options{Now: now, Location: time.UTC})
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	for _, d := range plan.Decisions {
		verdict := "keep"
		if !d.Keep {
			verdict = "drop"
		}
		var rs []string
		for _, r := range d.Reasons {
			rs = append(rs, r.Text)
		}
		fmt.Printf("%s %s %s: %s\n", d.Revision.Time.Format("Mon 01-02"), d.Revision.ID, verdict, strings.Join(rs, ", "))
	}
	// Output:
	// keep 2 weekly; all within 2d of the newest; tag release
	// Fri 11-20 rev0 keep: newest, weekly 2026-W47, within 2d
	// Thu 11-19 rev1 keep: within 2d
	// Wed 11-18 rev2 drop: no rule keeps it
	// Tue 11-17 rev3 drop: no rule keeps it
	// Mon 11-16 rev4 keep: tag:release
	// Sun 11-15 rev5 keep: weekly 2026-W46
	// Sat 11-14 rev6 drop: no rule keeps it
	// Fri 11-13 rev7 drop: no rule keeps it
	// Thu 11-12 rev8 drop: no rule keeps it
	// Wed 11-11 rev9 keep: protected
}

func ExampleParseDuration() {
	for _, s := range []string{"1y2m3d4h", "2w", "7x"} {
		d, err := retention.ParseDuration(s)
		fmt.Println(d, err)
	}
	// Output:
	// 1y2m3d4h <nil>
	// 2w <nil>
	// 0d unknown unit x in duration "7x"; use h, d, w, m (months), y
}

func ExampleSchedule_Due() {
	s, err := retention.ParseScheduleSpec("daily=1d:7,weekly=1w:4")
	if err != nil {
		panic(err)
	}
	last := time.Date(2026, 11, 16, 2, 0, 0, 0, time.UTC)
	revs := []retention.Revision{{ID: "a", Time: last, Tags: []string{"daily", "weekly"}}}
	fmt.Println(s.Due(revs, last.Add(12*time.Hour), nil))
	fmt.Println(s.Due(revs, last.AddDate(0, 0, 1), nil))
	fmt.Println(s.Due(revs, last.AddDate(0, 0, 9), nil)) // after missed runs
	// Output:
	// []
	// [daily]
	// [daily weekly]
}
