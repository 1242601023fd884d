package retention

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a calendar duration: years, months, weeks, days and hours.
// Unlike time.Duration it is applied on the calendar of a time zone, so
// "1d" across a daylight-saving change is 23 or 25 hours and "1m" is one
// calendar month. The zero value means "not set".
type Duration struct {
	Years, Months, Weeks, Days, Hours int
}

// durationUnits lists the accepted units in canonical order.
const durationUnits = "ymwdh"

// ParseDuration parses a duration such as "7d", "36h", "2w", "90m" or
// "1y2m3d4h". Units: y (years), m (months — not minutes), w (weeks), d
// (days), h (hours); each at most once, in any order. "0d" parses to the
// zero Duration. The error names the offending input.
func ParseDuration(s string) (Duration, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Duration{}, errors.New("empty duration; use a number and a unit such as 7d, 36h, 2w, 3m or 1y")
	}
	var d Duration
	seen := map[byte]bool{}
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			if s[0] == '-' {
				return Duration{}, fmt.Errorf("negative duration %q; durations count back from the newest revision and must be positive", in)
			}
			return Duration{}, fmt.Errorf("missing number before %q in duration %q; use a number and a unit such as 7d", s[:1], in)
		}
		n, err := strconv.Atoi(s[:i])
		if err != nil || n > 1_000_000 {
			return Duration{}, fmt.Errorf("number %s too large in duration %q", s[:i], in)
		}
		if i == len(s) {
			return Duration{}, fmt.Errorf("missing unit after %s in duration %q; use h, d, w, m (months), y", s[:i], in)
		}
		j := i
		for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z') {
			j++
		}
		token := strings.ToLower(s[i:j])
		if token == "" {
			return Duration{}, fmt.Errorf("unexpected %q after %s in duration %q; use a number and a unit such as 7d", s[i:i+1], s[:i], in)
		}
		if len(token) != 1 || strings.IndexByte(durationUnits, token[0]) < 0 {
			return Duration{}, fmt.Errorf("unknown unit %s in duration %q; use h, d, w, m (months), y", s[i:j], in)
		}
		unit := token[0]
		if seen[unit] {
			return Duration{}, fmt.Errorf("unit %c given twice in duration %q", unit, in)
		}
		seen[unit] = true
		switch unit {
		case 'y':
			d.Years = n
		case 'm':
			d.Months = n
		case 'w':
			d.Weeks = n
		case 'd':
			d.Days = n
		case 'h':
			d.Hours = n
		}
		s = s[j:]
	}
	return d, nil
}

// MustParseDuration is ParseDuration for constants; it panics on error.
func MustParseDuration(s string) Duration {
	d, err := ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

// Days returns a Duration of n days.
func Days(n int) Duration { return Duration{Days: n} }

// Hours returns a Duration of n hours.
func Hours(n int) Duration { return Duration{Hours: n} }

// IsZero reports whether d is zero (not set).
func (d Duration) IsZero() bool { return d == Duration{} }

// String formats d canonically, e.g. "1y2m3d4h"; the zero value is "0d".
func (d Duration) String() string {
	if d.IsZero() {
		return "0d"
	}
	var b strings.Builder
	for _, p := range []struct {
		n int
		u byte
	}{{d.Years, 'y'}, {d.Months, 'm'}, {d.Weeks, 'w'}, {d.Days, 'd'}, {d.Hours, 'h'}} {
		if p.n != 0 {
			b.WriteString(strconv.Itoa(p.n))
			b.WriteByte(p.u)
		}
	}
	return b.String()
}

// MarshalText encodes d in the ParseDuration syntax (for JSON configs).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes the ParseDuration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Before returns t minus d on the calendar of loc: years, months and days
// move the date (keeping the wall clock, DST-correct), then hours are
// subtracted as elapsed time. This is how restic applies --keep-within.
func (d Duration) Before(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc)
	return t.AddDate(-d.Years, -d.Months, -(d.Weeks*7 + d.Days)).Add(-time.Duration(d.Hours) * time.Hour)
}

// After returns t plus d on the calendar of loc (the mirror of Before).
func (d Duration) After(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc)
	return t.AddDate(d.Years, d.Months, d.Weeks*7+d.Days).Add(time.Duration(d.Hours) * time.Hour)
}

// Mul returns d with every field multiplied by k.
func (d Duration) Mul(k int) Duration {
	return Duration{d.Years * k, d.Months * k, d.Weeks * k, d.Days * k, d.Hours * k}
}

// Approx returns the nominal length of d (a year 365.2425 days, a month a
// twelfth of that); for ordering and tolerances only, never for calendar math.
func (d Duration) Approx() time.Duration {
	const day = 24 * time.Hour
	year := time.Duration(365.2425 * float64(day))
	return time.Duration(d.Years)*year + time.Duration(d.Months)*(year/12) +
		time.Duration(d.Weeks*7+d.Days)*day + time.Duration(d.Hours)*time.Hour
}

// Unlimited is the keep count meaning "all", restic's "unlimited".
const Unlimited = -1

// ParseCount parses a keep count: a non-negative integer, or "unlimited"
// (also "all" and "-1") for Unlimited.
func ParseCount(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "unlimited", "all", "-1":
		return Unlimited, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid count %q; use a number ≥ 0 or \"unlimited\"", s)
	}
	return n, nil
}

// ParseSize parses a byte size: a number with an optional unit K, M, G, T
// or P (powers of 1024; "KiB", "KB" and "k" all mean 1024 bytes, as in
// restic), e.g. "500M", "1.5T", "10GiB", "4096".
func ParseSize(s string) (int64, error) {
	in := s
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q; use a number with an optional unit K, M, G, T (e.g. 500M, 10G)", in)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("invalid number in size %q", in)
	}
	unit := strings.ToUpper(strings.TrimSpace(s[i:]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "IB"), "B")
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q in size %q; use K, M, G, T or P", strings.TrimSpace(s[i:]), in)
	}
	b := v * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q too large", in)
	}
	return int64(b), nil
}

// formatBytes renders n for reasons and warnings, e.g. "1.5 GiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	i := -1
	for math.Abs(f) >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}
