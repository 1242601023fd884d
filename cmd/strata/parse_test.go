package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"4096", 4096, false},
		{"20G", 20 << 30, false},
		{"512MiB", 512 << 20, false},
		{"1.5T", 3 << 39, false},
		{"10GB", 10e9, false},
		{"64k", 64 << 10, false},
		{"12Q", 0, true},
		{"-1G", 0, true},
		{"", 0, true},
	} {
		got, err := parseSize(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestParseShards(t *testing.T) {
	for _, c := range []struct {
		in   string
		k, m int
		bad  bool
	}{
		{"4+2", 4, 2, false},
		{"10+4", 10, 4, false},
		{"1+0", 1, 0, false},
		{"4+x", 0, 0, true},
		{"0+2", 0, 0, true},
		{"60+10", 0, 0, true},
		{"4", 0, 0, true},
	} {
		k, m, err := parseShards(c.in)
		if (err != nil) != c.bad || k != c.k || m != c.m {
			t.Errorf("parseShards(%q) = %d, %d, %v", c.in, k, m, err)
		}
	}
}

func TestSplitTarget(t *testing.T) {
	for _, c := range []struct{ in, name, rev, path string }{
		{"home", "home", "", ""},
		{"home@latest", "home", "latest", ""},
		{"home@~2:/etc/passwd", "home", "~2", "/etc/passwd"},
		{"home@2026-11-20T10:00:00Z", "home", "2026-11-20T10:00:00Z", ""},
		{"home@2026-11-20T10:00:00Z:/etc", "home", "2026-11-20T10:00:00Z", "/etc"},
		{"home@2026-11-20T11:00:00+01:00:etc/x", "home", "2026-11-20T11:00:00+01:00", "etc/x"},
		{"home@2026-11-20 10:00:05", "home", "2026-11-20 10:00:05", ""},
		{"home@2026-11-20 10:00:05:/etc", "home", "2026-11-20 10:00:05", "/etc"},
		{"home@2026-11-20 10:00:/etc", "home", "2026-11-20 10:00", "/etc"},
		{"home@2026-11-20:/etc", "home", "2026-11-20", "/etc"},
		{"vm@3d", "vm", "3d", ""},
	} {
		n, r, p := splitTarget(c.in)
		if n != c.name || r != c.rev || p != c.path {
			t.Errorf("splitTarget(%q) = %q %q %q; want %q %q %q", c.in, n, r, p, c.name, c.rev, c.path)
		}
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, in := range []string{"2026-11-20T10:00:00Z", "2026-11-20 10:00:00", "2026-11-20T11:00:00+01:00", "2026-11-20 10:00"} {
		got, err := parseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseTime("yesterday"); err == nil {
		t.Error("parseTime(yesterday) succeeded")
	}
}

func TestOptionalValues(t *testing.T) {
	got := optionalValues([]string{"strata", "scrub", "--read-data", "--repair", "--read-data=5"})
	want := []string{"strata", "scrub", "--read-data=100", "--repair", "--read-data=5"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("optionalValues = %v, want %v", got, want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{fail(exitWrongKey, "", "wrong"), exitWrongKey},
		{&exitStatus{code: 2}, 2},
		{fail(0, "", "plain"), exitError},
		{fmt.Errorf("restore: %w", context.Canceled), exitInterrupted},
	} {
		if got := report(io.Discard, c.err); got != c.want {
			t.Errorf("report(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	var b strings.Builder
	report(&b, fmt.Errorf("restore: copy a: %w", context.Canceled))
	if !strings.HasPrefix(b.String(), "strata: interrupted\n") {
		t.Errorf("an interruption reads %q, want it called interrupted", b.String())
	}
}
