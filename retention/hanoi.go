package retention

import (
	"fmt"
	"math/bits"
	"time"
)

// Hanoi is s3napback's decaying "Tower of Hanoi" rotation over Discs slots.
type Hanoi struct {
	Discs   int      `json:"discs"`             // number of slots, 1..40
	Every   Duration `json:"every,omitzero"`    // backup period; zero = 1d
	Archive bool     `json:"archive,omitempty"` // keep every revision of the last disc
}

// String renders e.g. "hanoi 5 discs every 1d, archive".
func (h Hanoi) String() string {
	s := fmt.Sprintf("hanoi %d discs every %s", h.Discs, h.every())
	if h.Archive {
		s += ", archive"
	}
	return s
}

func (h Hanoi) every() Duration {
	if h.Every.IsZero() {
		return Days(1)
	}
	return h.Every
}

// period numbers the backup period containing l: local calendar days when
// the period is whole days or weeks (DST-proof), elapsed time otherwise.
func (h Hanoi) period(l time.Time) int64 {
	e := h.every()
	if e.Hours == 0 {
		return floorDiv(dayNumber(l), int64(e.Weeks*7+e.Days))
	}
	secs := int64((e.Weeks*7+e.Days)*86400 + e.Hours*3600)
	return floorDiv(l.Unix(), secs)
}

// Slot returns the disc (0-based) that a backup in period p is written to:
// the number of trailing zero bits of the period's day within the cycle
// of 2^(Discs-1) periods, counted from 1. Disc 0 is written every second
// period, disc 1 every fourth, …, the last two discs once per cycle each.
func (h Hanoi) Slot(p int64) int {
	cycle := int64(1) << (h.Discs - 1)
	day := p%cycle + 1
	if day <= 0 {
		day += cycle
	}
	return bits.TrailingZeros64(uint64(day))
}

// applyHanoi keeps, per disc, the newest revision written to it; only the
// newest revision of a period counts (a later backup in the same period
// overwrites the same disc). With Archive, every revision that went to the
// last disc is kept (the tape taken out of the rotation).
func applyHanoi(items []*item, h Hanoi) {
	holder := make([]*item, h.Discs)
	var lastP int64
	var lastIt *item
	for _, it := range items {
		p := h.period(it.st.local)
		if lastIt != nil && p == lastP {
			it.gone = append(it.gone, Reason{Rule: "hanoi", Text: "hanoi: newer revision " + lastIt.rev.ID + " in the same period"})
			continue
		}
		lastP, lastIt = p, it
		slot := h.Slot(p)
		disc := fmt.Sprintf("disc %d", slot+1)
		switch {
		case h.Archive && slot == h.Discs-1:
			it.keepFor(Reason{Rule: "hanoi", Period: disc, Text: "hanoi " + disc + " (archived)"})
		case holder[slot] == nil:
			holder[slot] = it
			it.keepFor(reason("hanoi", disc))
		default:
			it.gone = append(it.gone, Reason{Rule: "hanoi", Period: disc, Text: "hanoi " + disc + " reused by " + holder[slot].rev.ID})
		}
	}
}

func (h Hanoi) validate() []error {
	var errs []error
	if h.Discs < 1 || h.Discs > 40 {
		errs = append(errs, &PolicyError{"--hanoi", fmt.Sprintf("discs must be 1 to 40, got %d", h.Discs)})
	}
	e := h.Every
	if e.Years != 0 || e.Months != 0 {
		errs = append(errs, &PolicyError{"--hanoi-every", fmt.Sprintf("period %s must be in weeks, days or hours", e)})
	}
	if e.Weeks < 0 || e.Days < 0 || e.Hours < 0 {
		errs = append(errs, &PolicyError{"--hanoi-every", fmt.Sprintf("negative period %s", e)})
	}
	return errs
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
