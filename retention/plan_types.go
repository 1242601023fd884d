package retention

import (
	"errors"
	"time"
)

// Revision is what the planner needs to know about one revision. The
// caller (cmd/strata, from layers) fills it in; the planner never changes it.
type Revision struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Tags      []string  `json:"tags,omitempty"`
	Protected bool      `json:"protected,omitempty"` // strata protect: never removed
	Mounted   bool      `json:"mounted,omitempty"`   // in use: removal is deferred
	Size      int64     `json:"size,omitempty"`      // logical size of the revision
	Added     int64     `json:"added,omitempty"`     // bytes the commit added to the repository
	// Freeable estimates the bytes removing this revision gives back; 0
	// means use Added. Only the space goal reads it.
	Freeable int64 `json:"freeable,omitempty"`
}

func (r Revision) freeable() int64 {
	if r.Freeable > 0 {
		return r.Freeable
	}
	return r.Added
}

// Usage is the current space situation, the input of a space goal.
type Usage struct {
	RepoSize int64 `json:"repo_size"` // bytes the repository stores now
	Free     int64 `json:"free"`      // free bytes on the fullest shard filesystem
}

// Options carries the inputs of Apply besides revisions and policy.
type Options struct {
	// Now is the clock: ages, schedule expiry and the "future revision"
	// test use it. Zero means time.Now() — callers should pass it.
	Now time.Time
	// Location is the time zone of the calendar rules (days, ISO weeks,
	// months, years, DST). Nil means UTC.
	Location *time.Location
	// Force allows a plan in which no rule keeps any revision (the safety
	// rails still keep the newest, protected and mounted ones).
	Force bool
	// Usage feeds the space goal; ignored without one.
	Usage Usage
}

// Reason says why a revision stays or goes: the rule, and the period or
// position that matched.
type Reason struct {
	Rule   string `json:"rule"`             // e.g. "daily", "last", "within", "tag", "schedule", "hanoi", "importance", "protected", "mounted", "newest", "none"
	Period string `json:"period,omitempty"` // e.g. "2026-11-20", "2026-W47", "2/3", "daily 2/7"
	Text   string `json:"text"`             // the human form, e.g. "daily 2026-11-20"
	// Rank is a space rule's rank of the revision (1 the most important or
	// the newest), for ordering removals across volumes; 0 for other rules.
	Rank int `json:"-"`
}

func (r Reason) String() string { return r.Text }

func reason(rule, period string) Reason {
	t := rule
	if period != "" {
		t += " " + period
	}
	return Reason{Rule: rule, Period: period, Text: t}
}

// Decision is the verdict on one revision.
type Decision struct {
	Revision Revision `json:"revision"`
	Keep     bool     `json:"keep"`
	// Deferred is set for a mounted revision that no rule keeps: it stays
	// for now and a later prune removes it once unmounted.
	Deferred bool `json:"deferred,omitempty"`
	// Reasons lists every reason that keeps the revision, or, when Keep is
	// false, why it goes. Never empty.
	Reasons []Reason `json:"reasons"`
}

// SpaceReport says what the space goal asked for and what the plan gives.
type SpaceReport struct {
	Goal    string `json:"goal"`     // human form, e.g. "repository ≤ 10.0 GiB"
	Need    int64  `json:"need"`     // bytes to free to meet the goal (0 = met already)
	Freed   int64  `json:"freed"`    // estimated bytes the planned removals free
	Met     bool   `json:"met"`      // Freed ≥ Need
	Guarded bool   `json:"guarded"`  // the sudden-growth guard stopped the space rule
	MinFree int64  `json:"min_free"` // resolved free-space target (0 = none)
	MaxSize int64  `json:"max_size"` // repository size limit (0 = none)
}

// Plan is the result of Apply: one Decision per revision, newest first.
type Plan struct {
	Decisions []Decision   `json:"decisions"`
	Warnings  []string     `json:"warnings,omitempty"`
	Space     *SpaceReport `json:"space,omitempty"`
}

// Kept returns the revisions that stay, newest first.
func (p *Plan) Kept() []Revision { return p.filter(true) }

// Removed returns the revisions that go, newest first.
func (p *Plan) Removed() []Revision { return p.filter(false) }

func (p *Plan) filter(keep bool) []Revision {
	var out []Revision
	for _, d := range p.Decisions {
		if d.Keep == keep {
			out = append(out, d.Revision)
		}
	}
	return out
}

// ErrEmptyPolicy is returned (wrapped) by Validate and Apply when no
// retention option is set: like restic, strata refuses to act on nothing.
var ErrEmptyPolicy = errors.New("empty retention policy: give at least one --keep-* option, a schedule, hanoi or a space goal")

// ErrRemovesAll is returned by Apply when no rule keeps any revision, which
// almost always means a mistyped policy (e.g. a --keep-tag nobody carries).
// Options.Force overrides it; the newest revision stays regardless.
var ErrRemovesAll = errors.New("policy keeps no revision")

// ErrNoRevisions is returned by Apply for an empty revision list.
var ErrNoRevisions = errors.New("no revisions")
