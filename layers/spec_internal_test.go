package layers

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Ids made only of digits, or of digits and an age unit, also parse as a
// count or an age: the CI run that found this had revision 5700817709af3e3f
// and the spec vm@57008177.
func TestResolveNumericLookingIDs(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	revs := []Revision{
		{ID: "5700817709af3e3f", Seq: 1, Time: t0},
		{ID: "100d00aa", Seq: 2, Time: t0.Add(time.Hour)},
		{ID: "2bcd", Seq: 3, Time: t0.Add(2 * time.Hour)},
		{ID: "1234abcd", Seq: 4, Time: t0.Add(3 * time.Hour)},
	}
	now := t0.Add(5 * time.Hour)
	tests := []struct{ spec, want string }{
		{spec: "57008177", want: "5700817709af3e3f"}, // count out of range: an id prefix
		{spec: "5700817709af3e3f", want: "5700817709af3e3f"},
		{spec: "100d", want: "100d00aa"}, // an age before every revision: an id prefix
		{spec: "1234", want: "1234abcd"}, // count out of range: an id prefix
		{spec: "2", want: "100d00aa"},    // short: a count, though 2bcd starts with 2
		{spec: "2h", want: "1234abcd"},   // short: an age, though 2bcd starts with 2
		{spec: "4h", want: "100d00aa"},
	}
	many := append([]Revision(nil), revs...)
	for i := 0; i < 1300; i++ {
		many = append([]Revision{{ID: fmt.Sprintf("f%07x", i), Seq: 0, Time: t0.Add(-time.Duration(i+1) * time.Hour)}}, many...)
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := resolveSpec(revs, tt.spec, now)
			if err != nil || got.ID != tt.want {
				t.Fatalf("got %q, %v; want %q", got.ID, err, tt.want)
			}
		})
	}
	// With 1,304 revisions, 1234 is both a count and an id prefix.
	_, err := resolveSpec(many, "1234", now)
	var se *SpecError
	if !errors.As(err, &se) || !se.Ambiguous || len(se.Candidates) != 2 {
		t.Fatalf("1234 among 1304 revisions: got %v; want ambiguous between the count and the id", err)
	}
}

func TestResolveAmbiguousPrefix(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	revs := []Revision{
		{ID: "abc123", Seq: 1, Time: t0},
		{ID: "abd456", Seq: 2, Time: t0.Add(time.Hour)},
		{ID: "ffe789", Seq: 3, Time: t0.Add(2 * time.Hour), Tags: []string{"abc"}},
	}
	tests := []struct {
		spec      string
		want      string
		ambiguous bool
		noMatch   bool
	}{
		{spec: "ab", ambiguous: true},
		{spec: "abc1", want: "abc123"},
		{spec: "abd", want: "abd456"},
		{spec: "abc", want: "ffe789"}, // a tag wins over an id prefix
		{spec: "ff", want: "ffe789"},
		{spec: "0f", noMatch: true},
		{spec: "abc~1", noMatch: true},
		{spec: "0f", noMatch: true},
		{spec: "latest~1", want: "abd456"},
		{spec: "LAST~2", want: "abc123"},
		{spec: "latest~3", noMatch: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := resolveSpec(revs, tt.spec, t0.Add(24*time.Hour))
			var se *SpecError
			switch {
			case tt.ambiguous:
				if !errors.As(err, &se) || !se.Ambiguous || len(se.Candidates) != 2 {
					t.Fatalf("got %v, %v; want ambiguous with 2 candidates", got.ID, err)
				}
			case tt.noMatch:
				if !errors.As(err, &se) || se.Ambiguous {
					t.Fatalf("got %v, %v; want no match", got.ID, err)
				}
			default:
				if err != nil || got.ID != tt.want {
					t.Fatalf("got %q, %v; want %q", got.ID, err, tt.want)
				}
			}
		})
	}
}

// A time as list prints it (whole seconds, UTC) finds the revision made
// within that second; the second before does not.
func TestResolveTimeAsListed(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 5, 700_000_000, time.UTC)
	revs := []Revision{{ID: "a1b2c3d4e5f60718", Time: t0}}
	for _, tt := range []struct {
		spec  string
		found bool
	}{
		{t0.Format("2006-01-02 15:04:05"), true},
		{t0.Format(time.RFC3339), true},
		{t0.Format("2006-01-02 15:04"), true},
		{t0.Add(-time.Second).Format("2006-01-02 15:04:05"), false},
		{t0.Add(-time.Second).Format(time.RFC3339), false},
	} {
		got, err := resolveSpec(revs, tt.spec, t0.Add(time.Hour))
		if found := err == nil && got.ID == revs[0].ID; found != tt.found {
			t.Errorf("%q: found %v (%v), want %v", tt.spec, found, err, tt.found)
		}
	}
}

func TestParseAge(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    time.Duration
		bad     bool
		tooLong bool
	}{
		{in: "26h", want: 26 * time.Hour},
		{in: "3d", want: 72 * time.Hour},
		{in: "1w", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "", bad: true},
		{in: "3", bad: true},
		{in: "3x", bad: true},
		{in: "-1d", bad: true},
		// The longest ages a time.Duration holds, and one unit more:
		// those wrapped around to negative ages, which named the
		// latest revision.
		{in: "292y", want: 292 * 365 * 24 * time.Hour},
		{in: "106751d", want: 106751 * 24 * time.Hour},
		{in: "2562047h", want: 2562047 * time.Hour},
		{in: "293y", bad: true, tooLong: true},
		{in: "106752d", bad: true, tooLong: true},
		{in: "2562048h", bad: true, tooLong: true},
		{in: "292y1000d", bad: true, tooLong: true}, // each part fits, the sum does not
		{in: "99999999999999999999s", bad: true, tooLong: true},
	} {
		got, err := ParseAge(tt.in)
		var ar *AgeRangeError
		if tt.bad != (err != nil) || !tt.bad && got != tt.want || tt.tooLong != errors.As(err, &ar) {
			t.Errorf("ParseAge(%q) = %v, %v; want %v (bad %v, out of range %v)", tt.in, got, err, tt.want, tt.bad, tt.tooLong)
		}
	}
}

// An age too long to count back is an error naming the range, as a
// spec; it resolved to the latest revision.
func TestResolveAgeOutOfRange(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	revs := []Revision{{ID: "a1b2c3d4e5f60718", Time: t0}, {ID: "b1b2c3d4e5f60718", Time: t0.Add(time.Hour)}}
	for _, spec := range []string{"293y", "2562048h", "106752d", "9999y"} {
		got, err := resolveSpec(revs, spec, t0.Add(2*time.Hour))
		var ar *AgeRangeError
		if !errors.As(err, &ar) {
			t.Errorf("%s: got %q, %v; want an AgeRangeError", spec, got.ID, err)
		}
	}
	if got, err := resolveSpec(revs, "292y", t0.Add(2*time.Hour)); err == nil {
		t.Errorf("292y: got %q, want no match", got.ID)
	}
}
