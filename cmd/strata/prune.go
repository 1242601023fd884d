package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/retention"
)

type pruneCmd struct {
	Volumes []string `arg:"" optional:"" help:"Volumes to prune (default: all)."`
	DryRun  bool     `short:"n" help:"Only show what would be removed and why."`

	KeepLast          string   `placeholder:"N" help:"Keep the N newest revisions."`
	KeepHourly        string   `placeholder:"N" help:"Keep the newest revision of each of the N newest hours."`
	KeepDaily         string   `placeholder:"N" help:"... of the N newest days."`
	KeepWeekly        string   `placeholder:"N" help:"... of the N newest ISO weeks."`
	KeepMonthly       string   `placeholder:"N" help:"... of the N newest months."`
	KeepYearly        string   `placeholder:"N" help:"... of the N newest years."`
	KeepWithin        string   `placeholder:"D" help:"Keep every revision newer than the newest minus D (e.g. 7d, 36h, 1y2m)."`
	KeepWithinHourly  string   `placeholder:"D" help:"Keep the newest revision of every hour within D."`
	KeepWithinDaily   string   `placeholder:"D" help:"... of every day within D."`
	KeepWithinWeekly  string   `placeholder:"D" help:"... of every week within D."`
	KeepWithinMonthly string   `placeholder:"D" help:"... of every month within D."`
	KeepWithinYearly  string   `placeholder:"D" help:"... of every year within D."`
	KeepTag           []string `placeholder:"T[,T2]" help:"Keep revisions carrying all of these tags; repeatable."`
	Schedule          string   `placeholder:"NAME|SPEC" help:"backy tag lifetimes: a schedule name from REPO/schedules.json or a spec like daily=1d:7,weekly=1w:4."`
	Hanoi             int      `placeholder:"N" help:"Tower-of-Hanoi rotation over N discs."`
	HanoiEvery        string   `placeholder:"D" help:"Hanoi period (default 1d)."`
	HanoiArchive      bool     `help:"Keep every revision of the last Hanoi disc."`
	MaxSize           string   `placeholder:"SIZE" help:"Remove least important revisions until the repository fits SIZE."`
	MinFree           string   `placeholder:"SIZE|auto" help:"... until the shard filesystems have SIZE free (auto: 1.5x recent average added)."`
	SpaceOrder        string   `enum:"importance,age" default:"importance" help:"Which revisions a space goal removes first."`
	SpaceGuard        float64  `placeholder:"F" help:"Stop the space goal when the newest revision added more than F times the recent median (default 3, <0 off)."`
	TZ                string   `env:"TZ" placeholder:"ZONE" help:"Time zone of the calendar rules (default UTC)."`
	Force             bool     `help:"Allow a policy that keeps no revision by any rule (the newest stays anyway)."`
	MaxUnused         string   `default:"5%" placeholder:"PCT" help:"Repack segments whose unused share exceeds PCT."`
}

type pruneArgs struct {
	Volumes   []string         `json:"volumes,omitempty"`
	DryRun    bool             `json:"dry_run"`
	Policy    retention.Policy `json:"policy"`
	TZ        string           `json:"tz,omitempty"`
	Force     bool             `json:"force,omitempty"`
	MaxUnused float64          `json:"max_unused"`
}

type prunePlan struct {
	Volume    string                 `json:"volume"`
	Decisions []retention.Decision   `json:"decisions"`
	Warnings  []string               `json:"warnings,omitempty"`
	Space     *retention.SpaceReport `json:"space,omitempty"`
	Error     string                 `json:"error,omitempty"`
}

type pruneResult struct {
	Plans      []prunePlan `json:"plans"`
	Removed    int         `json:"removed"`
	FreedBytes int64       `json:"freed_bytes"`
	DryRun     bool        `json:"dry_run"`
}

func (c *pruneCmd) policy() (retention.Policy, error) {
	var p retention.Policy
	var errs []error
	count := func(flag, s string, dst *int) {
		if s == "" {
			return
		}
		n, err := retention.ParseCount(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flag, err))
		}
		*dst = n
	}
	dur := func(flag, s string, dst *retention.Duration) {
		if s == "" {
			return
		}
		d, err := retention.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flag, err))
		}
		*dst = d
	}
	count("--keep-last", c.KeepLast, &p.Last)
	count("--keep-hourly", c.KeepHourly, &p.Hourly)
	count("--keep-daily", c.KeepDaily, &p.Daily)
	count("--keep-weekly", c.KeepWeekly, &p.Weekly)
	count("--keep-monthly", c.KeepMonthly, &p.Monthly)
	count("--keep-yearly", c.KeepYearly, &p.Yearly)
	dur("--keep-within", c.KeepWithin, &p.Within)
	dur("--keep-within-hourly", c.KeepWithinHourly, &p.WithinHourly)
	dur("--keep-within-daily", c.KeepWithinDaily, &p.WithinDaily)
	dur("--keep-within-weekly", c.KeepWithinWeekly, &p.WithinWeekly)
	dur("--keep-within-monthly", c.KeepWithinMonthly, &p.WithinMonthly)
	dur("--keep-within-yearly", c.KeepWithinYearly, &p.WithinYearly)
	for _, t := range c.KeepTag {
		var set []string
		if t != "" {
			set = strings.Split(t, ",")
		}
		p.KeepTags = append(p.KeepTags, set)
	}
	if c.Hanoi != 0 || c.HanoiEvery != "" || c.HanoiArchive {
		h := retention.Hanoi{Discs: c.Hanoi, Archive: c.HanoiArchive}
		dur("--hanoi-every", c.HanoiEvery, &h.Every)
		p.Hanoi = &h
	}
	if c.MaxSize != "" || c.MinFree != "" {
		sp := retention.Space{Order: c.SpaceOrder, GuardFactor: c.SpaceGuard}
		if c.MaxSize != "" {
			n, err := retention.ParseSize(c.MaxSize)
			if err != nil {
				errs = append(errs, fmt.Errorf("--max-size: %w", err))
			}
			sp.MaxSize = n
		}
		if c.MinFree == "auto" {
			sp.AutoFree = true
		} else if c.MinFree != "" {
			n, err := retention.ParseSize(c.MinFree)
			if err != nil {
				errs = append(errs, fmt.Errorf("--min-free: %w", err))
			}
			sp.MinFree = n
		}
		p.Space = &sp
	}
	if len(errs) > 0 {
		return p, errors.Join(errs...)
	}
	return p, nil
}

func (c *pruneCmd) Run(ctx context.Context, g *Globals) error {
	p, err := c.policy()
	if err != nil {
		return &userError{msg: "bad retention option", hint: "see 'strata prune --help'", code: exitUsage, err: err}
	}
	a := pruneArgs{Volumes: c.Volumes, DryRun: c.DryRun, TZ: c.TZ, Force: c.Force}
	if c.Schedule != "" {
		s, err := loadSchedule(g, c.Schedule)
		if err != nil {
			return err
		}
		p.Schedule = &s
	}
	if err := p.Validate(); err != nil {
		return &userError{msg: "bad retention policy", hint: "see 'strata prune --help'", code: exitUsage, err: err}
	}
	a.Policy = p
	mu := strings.TrimSuffix(c.MaxUnused, "%")
	if _, err := fmt.Sscanf(mu, "%g", &a.MaxUnused); err != nil || a.MaxUnused < 0 || a.MaxUnused > 100 {
		return fail(exitUsage, "", "--max-unused: want a percentage like 5%%, got %q", c.MaxUnused)
	}
	a.MaxUnused /= 100
	if c.TZ != "" {
		if _, err := time.LoadLocation(c.TZ); err != nil {
			return fail(exitUsage, "use an IANA zone like Europe/Berlin", "--tz: unknown time zone %q", c.TZ)
		}
	}
	var res pruneResult
	if err := call(ctx, g, "prune", a, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	return printPrune(res)
}

func printPrune(res pruneResult) error {
	for _, pl := range res.Plans {
		fmt.Printf("volume %s:\n", pl.Volume)
		if pl.Error != "" {
			fmt.Printf("  %s\n", pl.Error)
			continue
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME (UTC)\tID\tTAGS\tACTION\tREASON")
		for _, d := range pl.Decisions {
			action := "keep"
			switch {
			case d.Deferred:
				action = "defer"
			case !d.Keep:
				action = "remove"
			}
			var rs []string
			for _, r := range d.Reasons {
				rs = append(rs, r.Text)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", d.Revision.Time.UTC().Format("2006-01-02 15:04:05"), d.Revision.ID[:min(8, len(d.Revision.ID))],
				strings.Join(d.Revision.Tags, ","), action, strings.Join(rs, ", "))
		}
		tw.Flush()
		for _, w := range pl.Warnings {
			fmt.Printf("  warning: %s\n", w)
		}
	}
	if res.DryRun {
		fmt.Println("dry run: nothing was removed")
	} else {
		fmt.Printf("removed %d revisions, freed %s\n", res.Removed, humanBytes(res.FreedBytes))
	}
	return nil
}

func opPrune(ctx context.Context, env *opEnv, raw json.RawMessage) (any, error) {
	a, err := decode[pruneArgs](raw)
	if err != nil {
		return nil, err
	}
	loc := time.UTC
	if a.TZ != "" {
		if loc, err = time.LoadLocation(a.TZ); err != nil {
			return nil, err
		}
	}
	lr := env.repo.layers
	vols := a.Volumes
	if len(vols) == 0 {
		infos, err := lr.Volumes(ctx)
		if err != nil {
			return nil, err
		}
		for _, v := range infos {
			vols = append(vols, v.Name)
		}
	}
	res := pruneResult{DryRun: a.DryRun}
	var usage retention.Usage
	if st, err := env.repo.store.Stats(ctx); err == nil {
		usage = retention.Usage{RepoSize: st.StoredBytes, Free: int64(st.FreeBytes)}
	}
	for _, vol := range vols {
		revs, err := lr.Revisions(ctx, vol)
		if err != nil {
			return nil, volumeErr(err, vol)
		}
		pl := prunePlan{Volume: vol}
		if len(revs) == 0 {
			pl.Error = "no revisions"
			res.Plans = append(res.Plans, pl)
			continue
		}
		in := make([]retention.Revision, len(revs))
		for i, r := range revs {
			in[i] = retention.Revision{ID: r.ID, Time: r.Time, Tags: r.Tags, Protected: r.Protected, Size: r.Size, Added: r.Added,
				Mounted: env.srv != nil && env.srv.revisionMounted(vol, r.ID)}
		}
		plan, err := retention.Apply(in, a.Policy, retention.Options{Now: now(), Location: loc, Force: a.Force, Usage: usage})
		if errors.Is(err, retention.ErrRemovesAll) {
			return nil, &userError{msg: fmt.Sprintf("the policy would remove every revision of %s", vol), hint: "check the --keep-* options; --force overrides (the newest revision stays anyway)", code: exitError, err: err}
		}
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", vol, err)
		}
		pl.Decisions, pl.Warnings, pl.Space = plan.Decisions, plan.Warnings, plan.Space
		res.Plans = append(res.Plans, pl)
		if a.DryRun {
			continue
		}
		var ids []string
		for _, d := range plan.Decisions {
			if !d.Keep && !d.Deferred {
				ids = append(ids, d.Revision.ID)
			}
		}
		if len(ids) == 0 {
			continue
		}
		if err := removeRevisions(ctx, lr, vol, ids); err != nil {
			return nil, fmt.Errorf("remove revisions of %s: %w", vol, err)
		}
		res.Removed += len(ids)
	}
	if !a.DryRun && res.Removed > 0 {
		if env.progress != nil {
			env.progress(progress{Phase: "collecting garbage"})
		}
		freed, err := collectGarbage(ctx, env.repo, a.MaxUnused)
		res.FreedBytes = freed
		if err != nil {
			return res, fmt.Errorf("garbage collection (revisions are removed; rerun prune to finish): %w", err)
		}
	}
	return res, nil
}

// revisionMounted reports whether a revision is mounted or served.
func (s *server) revisionMounted(vol, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mounts {
		if m.volume == vol && m.Revision == id {
			return true
		}
	}
	return false
}

// loadSchedule finds a schedule by name in REPO/schedules.json, or parses
// an inline spec like daily=1d:7,weekly=1w:4.
func loadSchedule(g *Globals, s string) (retention.Schedule, error) {
	if strings.Contains(s, "=") {
		sc, err := retention.ParseScheduleSpec(s)
		if err != nil {
			return sc, &userError{msg: "bad schedule", hint: "e.g. daily=1d:7,weekly=1w:4,monthly=30d:12", code: exitUsage, err: err}
		}
		return sc, nil
	}
	dir, err := g.repoDir()
	if err != nil {
		return retention.Schedule{}, err
	}
	return scheduleByName(dir, s)
}

func scheduleByName(dir, name string) (retention.Schedule, error) {
	path := dir + "/schedules.json"
	b, err := os.ReadFile(path)
	if err != nil {
		return retention.Schedule{}, fail(exitUsage, "define schedules in "+path+` as {"NAME": {"daily": {"interval": "1d", "keep": 7}}}, or pass a spec like daily=1d:7`, "no schedule named %q", name)
	}
	all, err := retention.ParseSchedules(b)
	if err != nil {
		return retention.Schedule{}, fmt.Errorf("read %s: %w", path, err)
	}
	sc, ok := all[name]
	if !ok {
		var names []string
		for n := range all {
			names = append(names, n)
		}
		return sc, fail(exitUsage, "schedules in "+path+": "+strings.Join(names, ", "), "no schedule named %q", name)
	}
	return sc, nil
}

// scheduleTags returns the schedule's tags due for a commit at t.
func scheduleTags(ctx context.Context, r *repository, vol, spec string, t time.Time) ([]string, error) {
	var sc retention.Schedule
	var err error
	if strings.Contains(spec, "=") {
		sc, err = retention.ParseScheduleSpec(spec)
	} else {
		sc, err = scheduleByName(r.dir, spec)
	}
	if err != nil {
		return nil, err
	}
	revs, err := r.layers.Revisions(ctx, vol)
	if err != nil {
		return nil, volumeErr(err, vol)
	}
	in := make([]retention.Revision, len(revs))
	for i, rv := range revs {
		in[i] = retention.Revision{ID: rv.ID, Time: rv.Time, Tags: rv.Tags}
	}
	if t.IsZero() {
		t = now()
	}
	return sc.Due(in, t, time.UTC), nil
}

var _ = layers.Revision{}
