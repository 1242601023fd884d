package retention

import (
	"fmt"
	"time"
)

// unit is a calendar period kind.
type unit int

const (
	unitHour unit = iota
	unitDay
	unitWeek
	unitMonth
	unitYear
	numUnits
)

var unitNames = [numUnits]string{"hourly", "daily", "weekly", "monthly", "yearly"}

// stamp holds a revision's time on the calendar of the plan's zone, with
// one comparable key per period kind, computed once per revision.
type stamp struct {
	local time.Time
	key   [numUnits]int64
}

func newStamp(t time.Time, loc *time.Location) stamp {
	l := t.In(loc)
	y, m, d := l.Date()
	_, off := l.Zone()
	wy, w := l.ISOWeek()
	ymd := int64(y)*10000 + int64(m)*100 + int64(d)
	s := stamp{local: l}
	// The UTC offset is part of the hour key: the hour repeated when DST
	// ends is two different hours of the same clock reading.
	s.key[unitHour] = (ymd*100+int64(l.Hour()))*4096 + int64(off/60+2048)
	s.key[unitDay] = ymd
	s.key[unitWeek] = int64(wy)*100 + int64(w)
	s.key[unitMonth] = int64(y)*100 + int64(m)
	s.key[unitYear] = int64(y)
	return s
}

// label names the period of kind u containing s, e.g. "2026-W47".
func (s stamp) label(u unit) string {
	switch u {
	case unitHour:
		return s.local.Format("2006-01-02 15:00Z07:00")
	case unitDay:
		return s.local.Format("2006-01-02")
	case unitWeek:
		y, w := s.local.ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w)
	case unitMonth:
		return s.local.Format("2006-01")
	default:
		return s.local.Format("2006")
	}
}

// dayNumber counts local calendar days since 1970-01-01 (negative before).
func dayNumber(l time.Time) int64 {
	y, m, d := l.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}
