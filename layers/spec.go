package layers

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	reNth = regexp.MustCompile(`^~?([0-9]+)$`)
	reTag = regexp.MustCompile(`^(.+)~([0-9]+)$`)
	reAge = regexp.MustCompile(`^([0-9]+[smhdwy])+$`)
	reHex = regexp.MustCompile(`^[0-9a-f]+$`)
)

// Resolve resolves a revision spec (design.md "Revision specs") at time now.
// Errors: ErrUnknownVolume, ErrNoRevisions, *SpecError (no match or
// ambiguous, with the candidates).
//
// Forms, tried in this order:
//
//	latest, last, ""     the newest revision
//	N, ~N, latest~N      N before the newest (0 = newest)
//	TAG, TAG~N           the newest revision tagged TAG, or N before it among those
//	AGE                  3d, 36h, 2w, 1d12h: newest at or before now minus AGE
//	YYYY-MM-DD           newest at or before the end of that day (UTC)
//	RFC 3339 time        newest at or before it
//	ID or ID prefix      the revision whose id starts with it (unique)
//
// A full id always wins and a tag wins over an id prefix; a count, age or
// date that finds no revision is tried as an id prefix (see resolveSpec).
// Revisions are ordered by their time, ties by commit order: the order
// list prints them in and the --all mount's latest follows, so ~N counts
// rows of list even when a commit --time imported an older backup after
// newer ones.
func (r *Repo) Resolve(ctx context.Context, volume, spec string, now time.Time) (Revision, error) {
	v, err := r.volume(volume)
	if err != nil {
		return Revision{}, err
	}
	rrs, err := v.revisions()
	if err != nil {
		return Revision{}, err
	}
	if len(rrs) == 0 {
		return Revision{}, fmt.Errorf("resolve %s@%s: %w", volume, spec, ErrNoRevisions)
	}
	revs := make([]Revision, len(rrs))
	for i, rr := range rrs {
		revs[i] = rr.Revision
	}
	slices.SortStableFunc(revs, func(a, b Revision) int { return a.Time.Compare(b.Time) })
	rev, err := resolveSpec(revs, strings.TrimSpace(spec), now)
	if err != nil {
		return Revision{}, fmt.Errorf("resolve %s@%s: %w", volume, spec, err)
	}
	return rev, nil
}

// resolveSpec resolves spec among revs (oldest first, non-empty).
//
// Bare numbers and ages are also valid hex, so "57008177" may be the 57
// millionth-from-newest revision or an id prefix, and "100d" an age or an id
// prefix. Specs shorter than minIDConflict keep their numeric meaning. A
// longer numeric form that finds no revision falls through to id prefixes,
// and one that finds a revision while an id prefix also matches is reported
// as ambiguous rather than guessed.
func resolveSpec(revs []Revision, spec string, now time.Time) (Revision, error) {
	switch strings.ToLower(spec) {
	case "", "latest", "last":
		return revs[len(revs)-1], nil
	}
	byID := idMatches(revs, spec)
	if len(byID) == 1 && byID[0].ID == strings.ToLower(spec) {
		return byID[0], nil
	}
	if tagged, n, ok := taggedWith(revs, spec); ok {
		return nth(tagged, spec, n)
	}
	// latest~N is ~N, as TAG~N counts back from TAG (git's HEAD~N).
	if m := reTag.FindStringSubmatch(strings.ToLower(spec)); m != nil && (m[1] == "latest" || m[1] == "last") {
		n, err := strconv.Atoi(m[2])
		if err != nil {
			return Revision{}, &SpecError{Spec: spec, Candidates: lastN(revs, 5)}
		}
		return nth(revs, spec, n)
	}
	numeric, found, numErr := resolveNumeric(revs, spec, now)
	if numErr != nil && len(spec) < minIDConflict {
		return Revision{}, numErr
	}
	switch {
	case found && len(byID) > 0 && len(spec) >= minIDConflict:
		return Revision{}, &SpecError{Spec: spec, Candidates: append([]Revision{numeric}, byID...), Ambiguous: true}
	case found:
		return numeric, nil
	case len(byID) == 1:
		return byID[0], nil
	case len(byID) > 1:
		return Revision{}, &SpecError{Spec: spec, Candidates: byID, Ambiguous: true}
	case numErr != nil:
		return Revision{}, numErr
	}
	return Revision{}, &SpecError{Spec: spec, Candidates: lastN(revs, 5)}
}

// minIDConflict is the shortest spec that may be an id prefix as well as a
// count or age; shorter ones ("3d", "2") would otherwise make common ages and
// counts ambiguous in any repository with a few hundred revisions.
const minIDConflict = 4

// idMatches returns the revisions whose id starts with spec, if spec is hex.
func idMatches(revs []Revision, spec string) []Revision {
	spec = strings.ToLower(spec)
	if !reHex.MatchString(spec) {
		return nil
	}
	var match []Revision
	for _, rev := range revs {
		if rev.ID == spec {
			return []Revision{rev}
		}
		if strings.HasPrefix(rev.ID, spec) {
			match = append(match, rev)
		}
	}
	return match
}

// taggedWith returns the revisions tagged TAG for the spec TAG or TAG~N.
func taggedWith(revs []Revision, spec string) ([]Revision, int, bool) {
	tag, n := spec, 0
	if m := reTag.FindStringSubmatch(spec); m != nil {
		tag = m[1]
		n, _ = strconv.Atoi(m[2])
	}
	var tagged []Revision
	for _, rev := range revs {
		for _, t := range rev.Tags {
			if t == tag {
				tagged = append(tagged, rev)
				break
			}
		}
	}
	return tagged, n, len(tagged) > 0
}

// resolveNumeric tries the count, age, date and time forms. found reports a
// revision; err, when not nil, is the form's own no-match error.
func resolveNumeric(revs []Revision, spec string, now time.Time) (rev Revision, found bool, err error) {
	switch {
	case reNth.MatchString(spec):
		n, convErr := strconv.Atoi(reNth.FindStringSubmatch(spec)[1])
		if convErr != nil {
			return Revision{}, false, &SpecError{Spec: spec, Candidates: lastN(revs, 5)}
		}
		rev, err = nth(revs, spec, n)
	case reAge.MatchString(spec):
		age, ageErr := parseAge(spec)
		if ageErr != nil {
			return Revision{}, false, &SpecError{Spec: spec, Err: ageErr}
		}
		rev, err = atOrBefore(revs, spec, now.Add(-age))
	default:
		t, span, ok := ParseTime(spec)
		if !ok {
			return Revision{}, false, nil
		}
		// A time stands for the end of the span it names, so a revision
		// made at 10:00:05.7 is found by the 10:00:05 list shows for it.
		rev, err = atOrBefore(revs, spec, t.Add(max(span-time.Nanosecond, 0)))
	}
	return rev, err == nil, err
}

// timeForms are the times specs and commit --time take: RFC 3339, and
// the form list prints (UTC) so a time can be pasted from it, down to the
// minute or the day, with the span each names.
var timeForms = []struct {
	layout string
	span   time.Duration
}{
	{time.RFC3339, time.Second}, // also takes fractional seconds, see ParseTime
	{"2006-01-02 15:04:05", time.Second},
	{"2006-01-02T15:04:05", time.Second},
	{"2006-01-02 15:04", time.Minute},
	{"2006-01-02T15:04", time.Minute},
	{"2006-01-02", 24 * time.Hour},
}

// ParseTime reads s as one of the time forms (UTC unless it says),
// returning the instant it starts at and the span it names: a second, a
// minute or a day, 0 for a time with fractional seconds.
func ParseTime(s string) (t time.Time, span time.Duration, ok bool) {
	for _, f := range timeForms {
		t, err := time.ParseInLocation(f.layout, s, time.UTC)
		if err != nil {
			continue
		}
		if t.Nanosecond() != 0 {
			return t, 0, true
		}
		return t, f.span, true
	}
	return time.Time{}, 0, false
}

// nth returns the revision n before the newest of list.
func nth(list []Revision, spec string, n int) (Revision, error) {
	if n < 0 || n >= len(list) {
		return Revision{}, &SpecError{Spec: spec, Candidates: lastN(list, 5)}
	}
	return list[len(list)-1-n], nil
}

// atOrBefore returns the newest revision with a time at or before t.
func atOrBefore(revs []Revision, spec string, t time.Time) (Revision, error) {
	best := -1
	for i, rev := range revs {
		if !rev.Time.After(t) && (best < 0 || !rev.Time.Before(revs[best].Time)) {
			best = i
		}
	}
	if best < 0 {
		return Revision{}, &SpecError{Spec: spec, Candidates: revs[:min(len(revs), 5)]}
	}
	return revs[best], nil
}

func lastN(revs []Revision, n int) []Revision {
	return revs[max(0, len(revs)-n):]
}

// ParseAge reads an age as revision specs take it (3d, 36h, 2w, 1d12h;
// s, m, h, d, w, y with m for minutes and y for 365 days), for flags that
// should read ages the same way. An age longer than a time.Duration holds
// (about 292 years) is an *AgeRangeError.
func ParseAge(s string) (time.Duration, error) {
	if !reAge.MatchString(s) {
		return 0, fmt.Errorf("bad age %q", s)
	}
	return parseAge(s)
}

var ageUnits = map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour,
	'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}

func parseAge(s string) (time.Duration, error) {
	in := s
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 || i == len(s) {
			return 0, fmt.Errorf("bad age %q", in)
		}
		unit, ok := ageUnits[s[i]]
		if !ok {
			return 0, fmt.Errorf("bad age %q", in)
		}
		// Multiplied unchecked, 293y wrapped around to a negative
		// duration, which named the latest revision.
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n > int64(math.MaxInt64-total)/int64(unit) {
			return 0, &AgeRangeError{Age: in}
		}
		total += time.Duration(n) * unit
		s = s[i+1:]
	}
	return total, nil
}

// AgeRangeError is an age longer than a time.Duration holds: about 292
// years, the most strata counts back from now.
type AgeRangeError struct{ Age string }

func (e *AgeRangeError) Error() string {
	return fmt.Sprintf("age %q is out of range: ages go up to 292y (106751d, 2562047h)", e.Age)
}

// HasRevisionsError is returned by RemoveVolume without force, and with
// force when some revisions are protected.
type HasRevisionsError struct {
	Volume    string
	Revisions int
	// Protected lists the ids of the protected revisions, in commit order.
	Protected []string
}

func (e *HasRevisionsError) Error() string {
	if len(e.Protected) > 0 {
		return fmt.Sprintf("volume %s has %d revisions, %d of them protected", e.Volume, e.Revisions, len(e.Protected))
	}
	return fmt.Sprintf("volume %s has %d revisions", e.Volume, e.Revisions)
}

// SpecError is a revision spec that matched nothing or several revisions.
// For no match, Candidates holds the newest revisions (or, for a time
// before every revision, the oldest) as hints.
type SpecError struct {
	Spec       string
	Candidates []Revision
	Ambiguous  bool
	// Err says why the spec cannot name any revision (an
	// *AgeRangeError); Candidates is then empty.
	Err error
}

func (e *SpecError) Unwrap() error { return e.Err }

func (e *SpecError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("revision spec %q: %v", e.Spec, e.Err)
	}
	ids := make([]string, len(e.Candidates))
	for i, c := range e.Candidates {
		ids[i] = c.ID + " (" + c.Time.UTC().Format(time.RFC3339) + ")"
	}
	if e.Ambiguous {
		return fmt.Sprintf("revision spec %q is ambiguous: matches %s", e.Spec, strings.Join(ids, ", "))
	}
	if len(ids) == 0 {
		return fmt.Sprintf("revision spec %q matches no revision", e.Spec)
	}
	return fmt.Sprintf("revision spec %q matches no revision; nearest: %s", e.Spec, strings.Join(ids, ", "))
}
