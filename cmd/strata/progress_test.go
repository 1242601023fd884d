package main

import (
	"testing"
	"time"
)

func TestHumanAge(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{25 * time.Second, "25s"},
		{4*time.Minute + 59*time.Second, "4m"},
		{3*time.Hour + 12*time.Minute, "3h12m"},
		{26 * time.Hour, "1d2h"},
		{795*time.Hour + 7*time.Minute, "33d"},
		{-90 * time.Second, "-1m"},
	} {
		if got := humanAge(c.d); got != c.want {
			t.Errorf("humanAge(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
