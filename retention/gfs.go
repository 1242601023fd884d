package retention

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// applyGFS applies the restic-style count and duration rules. items are
// newest first; latest is the reference time of the duration rules.
func applyGFS(items []*item, p Policy, latest time.Time, loc *time.Location) {
	n := len(items)
	if p.Last != 0 {
		count := p.Last
		for i, it := range items {
			if count == 0 {
				break
			}
			pos := fmt.Sprint(i + 1)
			if p.Last > 0 {
				pos += "/" + fmt.Sprint(p.Last)
			}
			it.keepFor(reason("last", pos))
			if count > 0 {
				count--
			}
		}
	}
	counts := [numUnits]int{p.Hourly, p.Daily, p.Weekly, p.Monthly, p.Yearly}
	for u := unitHour; u < numUnits; u++ {
		count := counts[u]
		if count == 0 {
			continue
		}
		var last int64
		have := false
		for i, it := range items {
			if count == 0 {
				break
			}
			key := it.st.key[u]
			// The newest revision of each period; restic also keeps the
			// oldest revision while counts are left, to keep history long.
			if !have || key != last {
				it.keepFor(reason(unitNames[u], it.st.label(u)))
			} else if i == n-1 {
				it.keepFor(oldest(unitNames[u], it.st.label(u)))
			} else {
				continue
			}
			have, last = true, key
			if count > 0 {
				count--
			}
		}
	}
	if !p.Within.IsZero() {
		cut := p.Within.Before(latest, loc)
		r := reason("within", p.Within.String())
		for _, it := range items {
			if !it.rev.Time.After(cut) {
				break
			}
			it.keepFor(r)
		}
	}
	withins := [numUnits]Duration{p.WithinHourly, p.WithinDaily, p.WithinWeekly, p.WithinMonthly, p.WithinYearly}
	for u := unitHour; u < numUnits; u++ {
		if withins[u].IsZero() {
			continue
		}
		cut := withins[u].Before(latest, loc)
		rule := "within-" + unitNames[u]
		var last int64
		have := false
		for i, it := range items {
			if !it.rev.Time.After(cut) {
				break
			}
			key := it.st.key[u]
			if !have || key != last {
				it.keepFor(reason(rule, it.st.label(u)))
			} else if i == n-1 {
				it.keepFor(oldest(rule, it.st.label(u)))
			}
			have, last = true, key
		}
	}
}

func oldest(rule, period string) Reason {
	return Reason{Rule: rule, Period: period, Text: rule + " " + period + " (oldest)"}
}

// applyTags keeps revisions carrying every tag of one of the sets.
func applyTags(items []*item, sets [][]string) {
	for _, set := range sets {
		text := "untagged"
		if len(set) > 0 {
			text = "tag:" + strings.Join(set, ",")
		}
		r := Reason{Rule: "tag", Period: strings.Join(set, ","), Text: text}
		for _, it := range items {
			if hasTags(it.rev.Tags, set) {
				it.keepFor(r)
			}
		}
	}
}

func hasTags(have, want []string) bool {
	if len(want) == 0 {
		return len(have) == 0
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
