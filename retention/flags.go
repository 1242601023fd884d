package retention

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Flags are the retention options of `strata prune` as the user types
// them. cmd/strata can embed the struct in its kong command (the struct
// tags are kong's; this package does not import kong) and call Policy.
// Empty strings mean "not given".
type Flags struct {
	KeepLast          string   `name:"keep-last" placeholder:"N" help:"Keep the N newest revisions (or 'unlimited')."`
	KeepHourly        string   `name:"keep-hourly" placeholder:"N" help:"Keep the newest revision of each of the N newest hours that have one."`
	KeepDaily         string   `name:"keep-daily" placeholder:"N" help:"Keep the newest revision of each of the N newest days that have one."`
	KeepWeekly        string   `name:"keep-weekly" placeholder:"N" help:"Keep the newest revision of each of the N newest ISO weeks that have one."`
	KeepMonthly       string   `name:"keep-monthly" placeholder:"N" help:"Keep the newest revision of each of the N newest months that have one."`
	KeepYearly        string   `name:"keep-yearly" placeholder:"N" help:"Keep the newest revision of each of the N newest years that have one."`
	KeepWithin        string   `name:"keep-within" placeholder:"DURATION" help:"Keep every revision within DURATION (e.g. 7d, 1y2m) of the newest."`
	KeepWithinHourly  string   `name:"keep-within-hourly" placeholder:"DURATION" help:"Keep the newest revision of every hour within DURATION of the newest."`
	KeepWithinDaily   string   `name:"keep-within-daily" placeholder:"DURATION" help:"Keep the newest revision of every day within DURATION of the newest."`
	KeepWithinWeekly  string   `name:"keep-within-weekly" placeholder:"DURATION" help:"Keep the newest revision of every week within DURATION of the newest."`
	KeepWithinMonthly string   `name:"keep-within-monthly" placeholder:"DURATION" help:"Keep the newest revision of every month within DURATION of the newest."`
	KeepWithinYearly  string   `name:"keep-within-yearly" placeholder:"DURATION" help:"Keep the newest revision of every year within DURATION of the newest."`
	KeepTag           []string `name:"keep-tag" sep:"none" placeholder:"TAG[,TAG]" help:"Keep revisions carrying all these tags (an empty TAG: untagged ones); repeatable."`
	Schedule          string   `name:"schedule" placeholder:"NAME|SPEC" help:"Keep by schedule tag lifetimes: a configured name or e.g. daily=1d:7,weekly=1w:4."`
	Hanoi             int      `name:"hanoi" placeholder:"DISCS" help:"Keep a Tower-of-Hanoi rotation over DISCS discs."`
	HanoiEvery        string   `name:"hanoi-every" placeholder:"DURATION" help:"Hanoi period (default 1d)."`
	HanoiArchive      bool     `name:"hanoi-archive" help:"Keep every revision of the last Hanoi disc."`
	MaxSize           string   `name:"max-size" placeholder:"SIZE" help:"Remove the least important revisions until the repository fits SIZE on disk (shard files, parity included, as du counts them; e.g. 500G). With a space goal the --keep-* rules keep what they name, and the rest goes only as far as the goal needs."`
	MinFree           string   `name:"min-free" placeholder:"SIZE|auto" help:"Remove the least important revisions until new backups have SIZE of disk to take, parity included, the repository's reserves not ('auto': 1.5 × average added)."`
	SpaceOrder        string   `name:"space-order" placeholder:"importance|age" help:"Order of space-driven removal (default importance)."`
	SpaceGuard        float64  `name:"space-guard" placeholder:"FACTOR" help:"Stop space-driven removal when the newest revision added more than FACTOR × the median (default 3, negative = off)."`
}

// Policy converts the flags; schedules resolves --schedule NAME (a value
// containing '=' is parsed as a compact spec instead). Every bad flag is
// reported, joined, each naming the flag; the result is validated.
func (f Flags) Policy(schedules map[string]Schedule) (Policy, error) {
	var p Policy
	var errs []error
	count := func(flag, v string, dst *int) {
		if v == "" {
			return
		}
		n, err := ParseCount(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
		}
		*dst = n
	}
	dur := func(flag, v string, dst *Duration) {
		if v == "" {
			return
		}
		d, err := ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
		} else if d.IsZero() {
			errs = append(errs, fmt.Errorf("--%s: duration %q is zero", flag, v))
		}
		*dst = d
	}
	size := func(flag, v string, dst *int64) {
		if v == "" {
			return
		}
		n, err := ParseSize(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
		}
		*dst = n
	}
	count("keep-last", f.KeepLast, &p.Last)
	count("keep-hourly", f.KeepHourly, &p.Hourly)
	count("keep-daily", f.KeepDaily, &p.Daily)
	count("keep-weekly", f.KeepWeekly, &p.Weekly)
	count("keep-monthly", f.KeepMonthly, &p.Monthly)
	count("keep-yearly", f.KeepYearly, &p.Yearly)
	dur("keep-within", f.KeepWithin, &p.Within)
	dur("keep-within-hourly", f.KeepWithinHourly, &p.WithinHourly)
	dur("keep-within-daily", f.KeepWithinDaily, &p.WithinDaily)
	dur("keep-within-weekly", f.KeepWithinWeekly, &p.WithinWeekly)
	dur("keep-within-monthly", f.KeepWithinMonthly, &p.WithinMonthly)
	dur("keep-within-yearly", f.KeepWithinYearly, &p.WithinYearly)
	for _, t := range f.KeepTag {
		p.KeepTags = append(p.KeepTags, ParseTagSet(t))
	}
	if f.Schedule != "" {
		if strings.Contains(f.Schedule, "=") {
			s, err := ParseScheduleSpec(f.Schedule)
			if err != nil {
				errs = append(errs, fmt.Errorf("--schedule: %w", err))
			}
			p.Schedule = &s
		} else if s, ok := schedules[f.Schedule]; ok {
			s.Name = f.Schedule
			p.Schedule = &s
		} else {
			names := make([]string, 0, len(schedules))
			for n := range schedules {
				names = append(names, n)
			}
			slices.Sort(names)
			known := "none are configured"
			if len(names) > 0 {
				known = "known: " + strings.Join(names, ", ")
			}
			errs = append(errs, fmt.Errorf("--schedule: unknown schedule %q (%s; or give a spec like daily=1d:7,weekly=1w:4)", f.Schedule, known))
		}
	}
	if f.Hanoi != 0 || f.HanoiEvery != "" || f.HanoiArchive {
		if f.Hanoi == 0 {
			errs = append(errs, errors.New("--hanoi-every/--hanoi-archive: need --hanoi DISCS"))
		}
		p.Hanoi = &Hanoi{Discs: f.Hanoi, Archive: f.HanoiArchive}
		dur("hanoi-every", f.HanoiEvery, &p.Hanoi.Every)
	}
	if f.MaxSize != "" || f.MinFree != "" || f.SpaceOrder != "" || f.SpaceGuard != 0 {
		s := &Space{Order: f.SpaceOrder, GuardFactor: f.SpaceGuard}
		size("max-size", f.MaxSize, &s.MaxSize)
		if strings.EqualFold(strings.TrimSpace(f.MinFree), "auto") {
			s.AutoFree = true
		} else {
			size("min-free", f.MinFree, &s.MinFree)
		}
		p.Space = s
	}
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}
