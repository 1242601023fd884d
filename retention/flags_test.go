package retention_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-backup/strata/retention"
)

func TestFlagsPolicy(t *testing.T) {
	scheds := map[string]retention.Schedule{}
	def, err := retention.ParseScheduleSpec("daily=1d:7,weekly=1w:4")
	if err != nil {
		t.Fatal(err)
	}
	scheds["default"] = def
	f := retention.Flags{KeepLast: "3", KeepDaily: "unlimited", KeepWithin: "1y2m", KeepTag: []string{"a,b", ""},
		Schedule: "default", Hanoi: 5, HanoiArchive: true, MaxSize: "10G", MinFree: "auto"}
	p, err := f.Policy(scheds)
	if err != nil {
		t.Fatal(err)
	}
	want := "keep 3 last, all daily; all within 1y2m of the newest; tag a+b; untagged; schedule daily=1d:7,weekly=1w:4; hanoi 5 discs every 1d, archive; space: repository ≤ 10.0 GiB and free ≥ 1.5 × average added by importance"
	if p.String() != want {
		t.Errorf("policy %q\nwant   %q", p, want)
	}
	if p.Schedule.Name != "default" {
		t.Errorf("schedule name %q", p.Schedule.Name)
	}
	p, err = retention.Flags{Schedule: "hourly=1h:24"}.Policy(nil)
	if err != nil || p.Schedule.String() != "hourly=1h:24" {
		t.Errorf("spec schedule: %v %v", p.Schedule, err)
	}

	bad := []struct {
		f    retention.Flags
		want []string
	}{
		{retention.Flags{KeepWithin: "7x"}, []string{`--keep-within: unknown unit x in duration "7x"; use h, d, w, m (months), y`}},
		{retention.Flags{KeepDaily: "many", KeepWeekly: "-3"}, []string{"--keep-daily: invalid count \"many\"", "--keep-weekly: invalid count \"-3\""}},
		{retention.Flags{Schedule: "nightly"}, []string{`--schedule: unknown schedule "nightly" (known: default`}},
		{retention.Flags{Schedule: "daily=1d"}, []string{"--schedule: schedule item \"daily=1d\": use TAG=INTERVAL:KEEP"}},
		{retention.Flags{HanoiArchive: true}, []string{"need --hanoi DISCS"}},
		{retention.Flags{MaxSize: "10Q"}, []string{`--max-size: unknown unit "Q"`}},
		{retention.Flags{SpaceOrder: "age"}, []string{"space rule without a goal"}},
		{retention.Flags{KeepWithin: "0d"}, []string{"--keep-within: duration \"0d\" is zero"}},
	}
	for _, tc := range bad {
		_, err := tc.f.Policy(scheds)
		if err == nil {
			t.Errorf("%+v accepted", tc.f)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q lacks %q", tc.f, err, w)
			}
		}
	}
	if _, err := (retention.Flags{}).Policy(nil); !errors.Is(err, retention.ErrEmptyPolicy) {
		t.Errorf("no flags: %v", err)
	}
}

func TestFlagHelpMentionsEveryFlag(t *testing.T) {
	h := retention.FlagHelp()
	for _, flag := range []string{"--keep-last", "--keep-hourly", "--keep-daily", "--keep-weekly", "--keep-monthly", "--keep-yearly",
		"--keep-within", "--keep-within-hourly", "--keep-within-daily", "--keep-tag", "--schedule", "--hanoi", "--hanoi-every",
		"--hanoi-archive", "--max-size", "--min-free", "--space-order", "--space-guard", "--force"} {
		if !strings.Contains(h, flag+" ") {
			t.Errorf("FlagHelp lacks %s", flag)
		}
	}
}
