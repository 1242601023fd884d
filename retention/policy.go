package retention

import (
	"errors"
	"fmt"
	"strings"
)

// Policy is a combination of retention rules. A revision stays when any
// rule keeps it; the zero value keeps nothing and is rejected (ErrEmptyPolicy).
type Policy struct {
	// GFS counts (restic's --keep-*): 0 = off, Unlimited (-1) = all.
	Last    int `json:"last,omitempty"`
	Hourly  int `json:"hourly,omitempty"`
	Daily   int `json:"daily,omitempty"`
	Weekly  int `json:"weekly,omitempty"`
	Monthly int `json:"monthly,omitempty"`
	Yearly  int `json:"yearly,omitempty"`

	// Within keeps every revision newer than the newest revision minus it.
	Within Duration `json:"within,omitzero"`
	// WithinHourly … WithinYearly keep the newest revision of every period
	// that lies within the duration of the newest revision.
	WithinHourly  Duration `json:"within_hourly,omitzero"`
	WithinDaily   Duration `json:"within_daily,omitzero"`
	WithinWeekly  Duration `json:"within_weekly,omitzero"`
	WithinMonthly Duration `json:"within_monthly,omitzero"`
	WithinYearly  Duration `json:"within_yearly,omitzero"`

	// KeepTags keeps revisions carrying all tags of any one set; an empty
	// set matches untagged revisions (restic's --keep-tag '').
	KeepTags [][]string `json:"keep_tags,omitempty"`

	Schedule *Schedule `json:"schedule,omitempty"` // backy tag lifetimes
	Hanoi    *Hanoi    `json:"hanoi,omitempty"`    // s3napback decaying discs
	Space    *Space    `json:"space,omitempty"`    // byteback space goal
}

// PolicyError describes one invalid option; Validate joins several.
type PolicyError struct {
	Option  string // flag-style name, e.g. "--keep-daily"
	Problem string
}

func (e *PolicyError) Error() string { return e.Option + ": " + e.Problem }

// hasRules reports whether any rule is set.
func (p Policy) hasRules() bool {
	return p.Last != 0 || p.Hourly != 0 || p.Daily != 0 || p.Weekly != 0 || p.Monthly != 0 || p.Yearly != 0 ||
		!p.Within.IsZero() || !p.WithinHourly.IsZero() || !p.WithinDaily.IsZero() || !p.WithinWeekly.IsZero() ||
		!p.WithinMonthly.IsZero() || !p.WithinYearly.IsZero() || len(p.KeepTags) > 0 ||
		p.Schedule != nil || p.Hanoi != nil || p.Space != nil
}

// Validate reports every invalid or contradictory option, joined; an empty
// policy gives ErrEmptyPolicy. Match details with errors.As(*PolicyError).
func (p Policy) Validate() error {
	if !p.hasRules() {
		return ErrEmptyPolicy
	}
	var errs []error
	bad := func(opt, format string, a ...any) {
		errs = append(errs, &PolicyError{Option: opt, Problem: fmt.Sprintf(format, a...)})
	}
	for _, c := range []struct {
		name string
		n    int
	}{{"--keep-last", p.Last}, {"--keep-hourly", p.Hourly}, {"--keep-daily", p.Daily},
		{"--keep-weekly", p.Weekly}, {"--keep-monthly", p.Monthly}, {"--keep-yearly", p.Yearly}} {
		if c.n < Unlimited {
			bad(c.name, "count %d is negative; use a number ≥ 0 or \"unlimited\"", c.n)
		}
	}
	for _, d := range []struct {
		name string
		d    Duration
	}{{"--keep-within", p.Within}, {"--keep-within-hourly", p.WithinHourly}, {"--keep-within-daily", p.WithinDaily},
		{"--keep-within-weekly", p.WithinWeekly}, {"--keep-within-monthly", p.WithinMonthly}, {"--keep-within-yearly", p.WithinYearly}} {
		if d.d.Years < 0 || d.d.Months < 0 || d.d.Weeks < 0 || d.d.Days < 0 || d.d.Hours < 0 {
			bad(d.name, "negative duration %s", d.d)
		}
	}
	for _, set := range p.KeepTags {
		for _, t := range set {
			if strings.TrimSpace(t) == "" {
				bad("--keep-tag", "empty tag in %q (use --keep-tag '' alone for untagged revisions)", strings.Join(set, ","))
			}
		}
	}
	if p.Schedule != nil {
		for _, e := range p.Schedule.validate() {
			errs = append(errs, e)
		}
	}
	if p.Hanoi != nil {
		for _, e := range p.Hanoi.validate() {
			errs = append(errs, e)
		}
	}
	if p.Space != nil {
		for _, e := range p.Space.validate() {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// String describes the policy in one line, e.g.
// "keep 7 daily, 4 weekly; all within 2d; tags [important]".
func (p Policy) String() string {
	var parts, counts []string
	for _, c := range []struct {
		n    int
		name string
	}{{p.Last, "last"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}, {p.Monthly, "monthly"}, {p.Yearly, "yearly"}} {
		switch {
		case c.n == Unlimited:
			counts = append(counts, "all "+c.name)
		case c.n > 0:
			counts = append(counts, fmt.Sprintf("%d %s", c.n, c.name))
		}
	}
	if len(counts) > 0 {
		parts = append(parts, strings.Join(counts, ", "))
	}
	if !p.Within.IsZero() {
		parts = append(parts, "all within "+p.Within.String()+" of the newest")
	}
	for _, w := range []struct {
		d    Duration
		name string
	}{{p.WithinHourly, "hourly"}, {p.WithinDaily, "daily"}, {p.WithinWeekly, "weekly"}, {p.WithinMonthly, "monthly"}, {p.WithinYearly, "yearly"}} {
		if !w.d.IsZero() {
			parts = append(parts, w.name+" within "+w.d.String())
		}
	}
	for _, set := range p.KeepTags {
		if len(set) == 0 {
			parts = append(parts, "untagged")
		} else {
			parts = append(parts, "tag "+strings.Join(set, "+"))
		}
	}
	if p.Schedule != nil {
		parts = append(parts, "schedule "+p.Schedule.String())
	}
	if p.Hanoi != nil {
		parts = append(parts, p.Hanoi.String())
	}
	if p.Space != nil {
		parts = append(parts, p.Space.String())
	}
	if len(parts) == 0 {
		return "keep nothing (empty policy)"
	}
	return "keep " + strings.Join(parts, "; ")
}

// ParseTagSet splits a --keep-tag value "a,b" into the set {a, b}; "" is the
// empty set, which matches untagged revisions.
func ParseTagSet(s string) []string {
	if strings.TrimSpace(s) == "" {
		return []string{}
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
