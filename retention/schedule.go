package retention

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Schedule is a backy-style schedule: named intervals, each a tag given to
// revisions at most once per interval, kept on the newest Keep revisions.
type Schedule struct {
	Name      string     // informational; the key in a schedules file
	Intervals []Interval // ordered shortest interval first
}

// Interval is one tag of a schedule, e.g. daily: every 1d, keep 7.
type Interval struct {
	Tag   string   `json:"-"`
	Every Duration `json:"interval"`
	Keep  int      `json:"keep"`
}

// DueTolerance is the share of an interval by which a run may come early
// and still be due, capped at DueToleranceMax: a daily job at 02:00 that
// finishes at 01:59 the next day is due, one that runs again at 14:00 the
// same day is not. The cap keeps long intervals exact (a 30d interval is
// not due after 29 days); an hour covers the jitter of backup run times.
const (
	DueTolerance    = 0.05
	DueToleranceMax = time.Hour
)

// Tags returns the schedule's tag names in order.
func (s Schedule) Tags() []string {
	out := make([]string, len(s.Intervals))
	for i, in := range s.Intervals {
		out[i] = in.Tag
	}
	return out
}

// String renders the compact form, e.g. "daily=1d:7,weekly=1w:4".
func (s Schedule) String() string {
	parts := make([]string, len(s.Intervals))
	for i, in := range s.Intervals {
		parts[i] = fmt.Sprintf("%s=%s:%d", in.Tag, in.Every, in.Keep)
	}
	return strings.Join(parts, ",")
}

// Due returns the tags of s that a commit at time t should carry, given the
// existing revisions: an interval is due unless a revision carrying its tag
// lies less than the interval (minus the tolerance, see DueTolerance)
// before or after t.
// After missed runs an interval is simply due once; nothing is back-filled.
// Looking both ways keeps back-dated commits (strata commit --time) right.
func (s Schedule) Due(revs []Revision, t time.Time, loc *time.Location) []string {
	if loc == nil {
		loc = time.UTC
	}
	var due []string
	for _, in := range s.Intervals {
		length := t.Sub(in.Every.Before(t, loc))
		window := length - min(time.Duration(float64(length)*DueTolerance), DueToleranceMax)
		found := false
		for _, r := range revs {
			d := r.Time.Sub(t)
			if d < 0 {
				d = -d
			}
			if d < window && slices.Contains(r.Tags, in.Tag) {
				found = true
				break
			}
		}
		if !found {
			due = append(due, in.Tag)
		}
	}
	return due
}

// applySchedule keeps revisions with at least one unexpired schedule tag.
// A tag expires on a revision once Keep newer revisions carry it and the
// revision is older than Keep intervals (backy's guard against a burst of
// commits flushing history). Revisions without schedule tags are left to
// the other rules.
func applySchedule(items []*item, s Schedule, now time.Time, loc *time.Location) {
	// Per revision: whether it carries any schedule tag, and a bit per
	// interval whose tag expired on it (validate caps intervals at 64).
	tagged := make([]bool, len(items))
	dead := make([]uint64, len(items))
	for bit, in := range s.Intervals {
		cut := in.Every.Mul(in.Keep).Before(now, loc)
		keepS := strconv.Itoa(in.Keep)
		seen := 0
		for i, it := range items {
			if !slices.Contains(it.rev.Tags, in.Tag) {
				continue
			}
			seen++
			tagged[i] = true
			switch {
			case seen <= in.Keep:
				it.keepFor(reason("schedule", in.Tag+" "+strconv.Itoa(seen)+"/"+keepS))
			case !it.rev.Time.Before(cut):
				it.keepFor(reason("schedule", fmt.Sprintf("%s %d/%d, younger than %s", in.Tag, seen, in.Keep, in.Every.Mul(in.Keep))))
			default:
				dead[i] |= 1 << bit
			}
		}
	}
	untagged := Reason{Rule: "schedule", Text: "no schedule tag"}
	expired := map[uint64]Reason{}
	for i, it := range items {
		switch {
		case it.keep:
		case !tagged[i]:
			it.gone = append(it.gone, untagged)
		case dead[i] != 0:
			r, ok := expired[dead[i]]
			if !ok {
				var tags []string
				for bit, in := range s.Intervals {
					if dead[i]&(1<<bit) != 0 {
						tags = append(tags, in.Tag)
					}
				}
				r = Reason{Rule: "schedule", Period: strings.Join(tags, ","), Text: "schedule tags expired: " + strings.Join(tags, ", ")}
				expired[dead[i]] = r
			}
			it.gone = append(it.gone, r)
		}
	}
}

func (s Schedule) validate() []error {
	var errs []error
	opt := "--schedule"
	if s.Name != "" {
		opt += " " + s.Name
	}
	if len(s.Intervals) == 0 {
		errs = append(errs, &PolicyError{opt, "schedule has no intervals"})
	}
	if len(s.Intervals) > 64 {
		errs = append(errs, &PolicyError{opt, fmt.Sprintf("%d intervals; at most 64", len(s.Intervals))})
	}
	seen := map[string]bool{}
	for _, in := range s.Intervals {
		switch {
		case in.Tag == "" || strings.ContainsAny(in.Tag, ",=: \t"):
			errs = append(errs, &PolicyError{opt, fmt.Sprintf("invalid tag name %q", in.Tag)})
		case seen[in.Tag]:
			errs = append(errs, &PolicyError{opt, fmt.Sprintf("tag %q given twice", in.Tag)})
		}
		seen[in.Tag] = true
		if in.Every.Approx() <= 0 || in.Every.Years < 0 || in.Every.Months < 0 || in.Every.Weeks < 0 || in.Every.Days < 0 || in.Every.Hours < 0 {
			errs = append(errs, &PolicyError{opt, fmt.Sprintf("interval of %q must be positive, got %s", in.Tag, in.Every)})
		}
		if in.Keep < 1 {
			errs = append(errs, &PolicyError{opt, fmt.Sprintf("keep of %q must be at least 1, got %d", in.Tag, in.Keep)})
		}
	}
	return errs
}

func (s *Schedule) sort() {
	slices.SortStableFunc(s.Intervals, func(a, b Interval) int {
		if c := cmp.Compare(a.Every.Approx(), b.Every.Approx()); c != 0 {
			return c
		}
		return strings.Compare(a.Tag, b.Tag)
	})
}

// ParseScheduleSpec parses the compact CLI form "TAG=INTERVAL:KEEP,...",
// e.g. "daily=1d:7,weekly=1w:4,monthly=30d:12". It validates the result.
func ParseScheduleSpec(spec string) (Schedule, error) {
	var s Schedule
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		tag, rest, ok := strings.Cut(part, "=")
		every, keep, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 {
			return Schedule{}, fmt.Errorf("schedule item %q: use TAG=INTERVAL:KEEP, e.g. daily=1d:7", part)
		}
		d, err := ParseDuration(every)
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule item %q: %w", part, err)
		}
		k, err := strconv.Atoi(strings.TrimSpace(keep))
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule item %q: keep %q is not a number", part, keep)
		}
		s.Intervals = append(s.Intervals, Interval{Tag: strings.TrimSpace(tag), Every: d, Keep: k})
	}
	s.sort()
	if errs := s.validate(); len(errs) > 0 {
		return Schedule{}, fmt.Errorf("schedule %q: %w", spec, errs[0])
	}
	return s, nil
}

// MarshalJSON writes the backy-like object form:
// {"daily": {"interval": "1d", "keep": 7}, ...}.
func (s Schedule) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, in := range s.Intervals {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(in.Tag)
		v, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object form written by MarshalJSON; intervals
// are ordered shortest first. It does not validate (Policy.Validate does).
func (s *Schedule) UnmarshalJSON(data []byte) error {
	var m map[string]Interval
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	s.Intervals = s.Intervals[:0]
	for tag, in := range m {
		in.Tag = tag
		s.Intervals = append(s.Intervals, in)
	}
	s.sort()
	return nil
}

// ParseSchedules reads a JSON object of named schedules, e.g.
//
//	{"default": {"daily": {"interval": "1d", "keep": 7},
//	             "weekly": {"interval": "1w", "keep": 4},
//	             "monthly": {"interval": "30d", "keep": 12}}}
//
// and validates each.
func ParseSchedules(data []byte) (map[string]Schedule, error) {
	var m map[string]Schedule
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse schedules: %w", err)
	}
	for name, s := range m {
		s.Name = name
		m[name] = s
		if errs := s.validate(); len(errs) > 0 {
			return nil, fmt.Errorf("parse schedules: %w", errs[0])
		}
	}
	return m, nil
}
