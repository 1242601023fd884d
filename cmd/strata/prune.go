package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strata-backup/strata/fs"
	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/retention"
	"github.com/strata-backup/strata/store"
)

type pruneCmd struct {
	Volumes []string `arg:"" optional:"" help:"Volumes to prune (default: all)."`
	DryRun  bool     `short:"n" help:"Only show what would be removed and why."`
	retention.Flags
	TZ        string `env:"TZ" placeholder:"ZONE" help:"Time zone of the calendar rules (default UTC)."`
	Force     bool   `help:"Allow a policy that keeps no revision by any rule (the newest stays anyway)."`
	MaxUnused string `default:"5%" placeholder:"PCT" help:"Repack segments whose unused share exceeds PCT."`
}

type pruneArgs struct {
	Volumes   []string         `json:"volumes,omitempty"`
	DryRun    bool             `json:"dry_run"`
	Policy    retention.Policy `json:"policy"`
	TZ        string           `json:"tz,omitempty"`
	Force     bool             `json:"force,omitempty"`
	MaxUnused float64          `json:"max_unused"`
	// GCOnly: no policy was given; remove nothing, collect garbage.
	GCOnly bool `json:"gc_only,omitempty"`
}

type prunePlan struct {
	Volume string `json:"volume"`
	// Round: a space goal's real run plans again after each round's
	// removals and garbage collection (1 for the first).
	Round     int                    `json:"round,omitempty"`
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
	Warnings   []string    `json:"warnings,omitempty"`
	// SpaceGoalMet: every space goal is met (estimated on a dry run,
	// measured after a real one); true without a space goal.
	SpaceGoalMet bool `json:"space_goal_met"`
	// GCOnly: no policy was given; no revision was looked at.
	GCOnly bool `json:"gc_only,omitempty"`
}

func (c *pruneCmd) Run(ctx context.Context, g *Globals) error {
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	schedules, err := loadSchedules(dir)
	if err != nil {
		return err
	}
	p, err := c.Flags.Policy(schedules)
	// No policy at all is a prune that removes no revision and gives back
	// the space of those already removed (volume rm, an earlier prune),
	// as restic's prune after forget: the hints that send users to
	// 'strata prune' mean that.
	gcOnly := errors.Is(err, retention.ErrEmptyPolicy) && len(c.Volumes) == 0
	if err != nil && !gcOnly {
		return &userError{msg: "bad retention policy", hint: "see 'strata prune --help'", code: exitUsage, err: err}
	}
	a := pruneArgs{Volumes: c.Volumes, DryRun: c.DryRun, TZ: c.TZ, Force: c.Force, Policy: p, GCOnly: gcOnly}
	mu := strings.TrimSuffix(c.MaxUnused, "%")
	if _, err := fmt.Sscanf(mu, "%g", &a.MaxUnused); err != nil || a.MaxUnused < 0 || a.MaxUnused > 100 {
		return fail(exitUsage, "", "--max-unused: want a percentage like 5%%, got %q", c.MaxUnused)
	}
	a.MaxUnused /= 100
	if c.TZ != "" {
		if _, err := time.LoadLocation(c.TZ); err != nil {
			if c.TZ != os.Getenv("TZ") {
				return fail(exitUsage, "use an IANA zone like Europe/Berlin", "--tz: unknown time zone %q", c.TZ)
			}
			// TZ in the environment in a form only the system's local
			// time reads (":/etc/localtime"): the local zone, as Go
			// derives it from TZ.
			a.TZ = "Local"
		}
	}
	var res pruneResult
	if err := call(ctx, g, "prune", a, &res); err != nil {
		return err
	}
	if g.JSON {
		err = printJSON(res)
	} else {
		err = printPrune(res)
	}
	if err == nil && !res.SpaceGoalMet && !res.DryRun {
		return fail(exitError, "prune with a goal the revisions left can meet, or unprotect or unmount what the warnings name", "space goal not met (see the warnings above)")
	}
	return err
}

func printPrune(res pruneResult) error {
	for _, pl := range res.Plans {
		if pl.Round > 1 {
			fmt.Printf("volume %s, round %d (measured after the removals before):\n", pl.Volume, pl.Round)
		} else {
			fmt.Printf("volume %s:\n", pl.Volume)
		}
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
	remove, deferred := 0, 0
	for _, pl := range res.Plans {
		for _, d := range pl.Decisions {
			switch {
			case d.Deferred:
				deferred++
			case !d.Keep:
				remove++
			}
		}
	}
	switch {
	case res.GCOnly && res.DryRun:
		fmt.Println("no retention policy given: a prune would remove no revision and only give back the space of those already removed")
	case res.GCOnly:
		fmt.Printf("no retention policy given: no revision removed; freed %s that removed revisions and volumes held\n", humanBytes(max(res.FreedBytes, 0)))
	case res.DryRun:
		fmt.Printf("dry run: nothing was removed; the policy would remove %s\n", count(int64(remove), "revision"))
	default:
		freed := "freed " + humanBytes(res.FreedBytes)
		if res.FreedBytes < 0 {
			// Repacking rewrites the live chunks of sparse segments,
			// parity and padding included, which can outweigh what it
			// deleted when little was garbage.
			freed = "freed nothing: repacking wrote " + humanBytes(-res.FreedBytes) + " more than it deleted"
		}
		fmt.Printf("removed %s, %s\n", count(int64(res.Removed), "revision"), freed)
	}
	if deferred > 0 {
		fmt.Printf("%s mounted or served, so not removed: run prune again once unmounted and no longer served\n", count(int64(deferred), "revision"))
	}
	for _, w := range res.Warnings {
		fmt.Printf("warning: %s\n", w)
	}
	return nil
}

func opPrune(ctx context.Context, env *opEnv, a pruneArgs) (any, error) {
	loc := time.UTC
	if a.TZ != "" {
		var err error
		if loc, err = time.LoadLocation(a.TZ); err != nil {
			return nil, err
		}
	}
	lr := env.repo.layers
	// A volume named twice would be planned twice, and its second removal
	// of each revision fail (QA).
	vols := slices.Compact(slices.Sorted(slices.Values(a.Volumes)))
	if len(vols) == 0 {
		infos, err := lr.Volumes(ctx)
		if err != nil {
			return nil, err
		}
		for _, v := range infos {
			vols = append(vols, v.Name)
		}
	}
	res := pruneResult{Plans: []prunePlan{}, DryRun: a.DryRun, SpaceGoalMet: true, GCOnly: a.GCOnly}
	if a.GCOnly {
		if a.DryRun {
			return res, nil
		}
		_, err := pruneCollect(ctx, env, a.MaxUnused, &res)
		return res, err
	}
	// A space goal's estimates count what each revision added, but what a
	// later revision (or another volume) still holds frees nothing: a real
	// run measures after each round and goes on, in the same order, until
	// the goal is met, nothing more may go, or a round's removals freed
	// almost nothing (QA saw one run stop at 9 GiB of a 5 GiB goal without
	// a word, and another, with two volumes holding the same data, remove
	// every revision of both for 12 MiB).
	// Garbage takes the disk without being history: what a volume rm
	// --force, a killed prune or an earlier --max-unused left is collected
	// before the first measurement, and repacked before any round removes
	// more for the goal, so no revision goes for space a collection gives
	// back.
	var unusedLeft int64
	if a.Policy.Space != nil && !a.DryRun {
		st, err := pruneCollect(ctx, env, a.MaxUnused, &res)
		if err != nil {
			return res, err
		}
		unusedLeft = st.UnusedLeft
	}
	var lastSize, lastEstimate int64
	for round := 1; ; round++ {
		plans, remove, size, err := measureAndPlan(ctx, env, a, vols, loc)
		if err != nil {
			return nil, err
		}
		if !a.DryRun && !goalReached(plans) && unusedLeft > 0 {
			// Repack, then measure again for this round.
			st, err := pruneCollect(ctx, env, 0, &res)
			if err != nil {
				return res, err
			}
			unusedLeft = st.UnusedLeft
			if plans, remove, size, err = measureAndPlan(ctx, env, a, vols, loc); err != nil {
				return nil, err
			}
		}
		if round > 1 {
			res.SpaceGoalMet = goalReached(plans)
			if res.SpaceGoalMet || len(remove) == 0 {
				if !res.SpaceGoalMet {
					res.Warnings = append(res.Warnings, spaceShortfall(plans))
				}
				break
			}
			if freed := lastSize - size; freed*10 < lastEstimate {
				res.SpaceGoalMet = false
				res.Warnings = append(res.Warnings, fmt.Sprintf("space goal not met: round %d's removals were estimated to free %s but freed %s: their data is still held by the revisions left (of this or another volume), so removing more in the same order would lose history for little; stopped with %s still to free",
					round-1, humanBytes(lastEstimate), humanBytes(max(freed, 0)), humanBytes(measuredNeed(plans))))
				break
			}
			if round > maxSpaceRounds {
				res.Warnings = append(res.Warnings, fmt.Sprintf("space goal: stopped after %d rounds, %s", maxSpaceRounds, spaceShortfall(plans)))
				break
			}
		}
		for i := range plans {
			plans[i].Round = round
		}
		res.Plans = append(res.Plans, plans...)
		if a.DryRun {
			res.SpaceGoalMet = spaceMet(plans)
			if a.Policy.Space != nil {
				res.Warnings = append(res.Warnings, "space estimates are what each revision added; data a later revision still holds frees nothing, so the real run collects garbage first, measures after removing these and removes more, in the same order, until the goal is met")
			}
			return res, nil
		}
		if a.Policy.Space != nil && len(remove) == 0 {
			// Nothing to remove: the collection before the first round
			// stands, and another round would measure the same.
			res.SpaceGoalMet = goalReached(plans)
			if !res.SpaceGoalMet {
				res.Warnings = append(res.Warnings, spaceShortfall(plans))
			}
			break
		}
		for _, vol := range vols {
			ids := remove[vol]
			if len(ids) == 0 {
				continue
			}
			if err := removeRevisions(ctx, env, vol, ids); err != nil {
				return nil, fmt.Errorf("remove revisions of %s: %w", vol, err)
			}
			res.Removed += len(ids)
		}
		st, err := pruneCollect(ctx, env, a.MaxUnused, &res)
		if err != nil {
			return res, err
		}
		unusedLeft = st.UnusedLeft
		if a.Policy.Space == nil {
			break
		}
		lastSize, lastEstimate = size, spaceEstimate(plans)
	}
	return res, nil
}

// measuredNeed is what the measured repository still needs freed.
func measuredNeed(plans []prunePlan) int64 {
	var n int64
	for _, pl := range plans {
		if pl.Space != nil {
			n = max(n, pl.Space.Need)
		}
	}
	return n
}

// spaceEstimate is what a round's space removals were estimated to free.
func spaceEstimate(plans []prunePlan) int64 {
	var n int64
	for _, pl := range plans {
		if pl.Space != nil {
			n += pl.Space.Freed
		}
	}
	return n
}

// measureAndPlan measures the repository and plans a round of removals;
// size is the repository's measured size.
func measureAndPlan(ctx context.Context, env *opEnv, a pruneArgs, vols []string, loc *time.Location) ([]prunePlan, map[string][]string, int64, error) {
	usage, overhead, err := measureUsage(ctx, env, a.Policy.Space)
	if err != nil {
		return nil, nil, 0, err
	}
	plans, remove, err := planPrune(ctx, env, a, vols, usage, overhead, loc)
	return plans, remove, usage.RepoSize, err
}

// maxSpaceRounds bounds the rounds of a space goal in one prune.
const maxSpaceRounds = 10

// measureUsage is the repository's size and free space for a space goal,
// in bytes on disk as du and df count them (--max-size compared data
// bytes, and left the repository well over the size given): shard bytes,
// and the factor that scales a revision's added data by the same parity
// and padding overhead. A goal is not planned on a failed measurement:
// it would count the whole goal as needed and remove revisions for it.
func measureUsage(ctx context.Context, env *opEnv, space *retention.Space) (retention.Usage, float64, error) {
	overhead := 1.0
	st, err := env.repo.store.Stats(ctx)
	if err != nil {
		if space != nil {
			return retention.Usage{}, overhead, fmt.Errorf("measure the repository for the space goal (nothing was removed): %w", err)
		}
		return retention.Usage{}, overhead, nil
	}
	if space != nil && (space.MinFree > 0 || space.AutoFree) && st.Capacity == 0 {
		return retention.Usage{}, overhead, fail(exitError, "use --max-size, which counts the repository's own bytes", "the free space of the shard filesystems is unknown, so a --min-free goal cannot be planned; nothing was removed")
	}
	if st.SegmentBytes > 0 {
		overhead = float64(st.ShardBytes) / float64(st.SegmentBytes)
	}
	// Free is what new backups may still take, on disk as the estimates
	// count (parity included): the store's reserves are not free (QA: a
	// --min-free auto run met its goal, and the next backup got ENOSPC).
	return retention.Usage{RepoSize: st.ShardBytes + int64(float64(st.OpenBytes)*overhead), Free: int64(float64(st.Avail) * overhead)}, overhead, nil
}

// spaceMet reports whether no plan's space goal needs more room.
func spaceMet(plans []prunePlan) bool {
	for _, pl := range plans {
		if pl.Space != nil && !pl.Space.Met {
			return false
		}
	}
	return true
}

// goalReached reports whether the measured repository meets its space
// goal already. spaceMet is the plan's estimate, which a later round
// cannot trust: the revisions it counts may share their data with the
// newest.
func goalReached(plans []prunePlan) bool { return measuredNeed(plans) == 0 }

// spaceShortfall says how far a measured repository is from its goal.
func spaceShortfall(plans []prunePlan) string {
	for _, pl := range plans {
		if sp := pl.Space; sp != nil && sp.Need > 0 && sp.Guarded {
			return fmt.Sprintf("space goal %s not met: %s more would have to go, and the space guard held removals back (a volume's newest revision grew suddenly; see the warnings above)", sp.Goal, humanBytes(sp.Need))
		}
	}
	for _, pl := range plans {
		if sp := pl.Space; sp != nil && sp.Need > 0 {
			return fmt.Sprintf("space goal %s not met: %s more would have to go, and the other rules and safety rails keep every revision left (protected, mounted, the newest, or kept by a --keep rule)",
				sp.Goal, humanBytes(sp.Need))
		}
	}
	return ""
}

// planPrune plans every volume before anything is removed: a policy that
// would empty one volume stops the prune of all of them.
func planPrune(ctx context.Context, env *opEnv, a pruneArgs, vols []string, usage retention.Usage, overhead float64, loc *time.Location) ([]prunePlan, map[string][]string, error) {
	type volRevs struct {
		name string
		in   []retention.Revision
	}
	load := func(vol string) (volRevs, error) {
		revs, err := env.repo.layers.Revisions(ctx, vol)
		if err != nil {
			return volRevs{}, volumeErr(err, vol)
		}
		var inUse map[string]bool
		if env.srv != nil {
			inUse = env.srv.revisionsInUse(ctx, vol)
		}
		in := make([]retention.Revision, len(revs))
		for i, r := range revs {
			in[i] = retention.Revision{ID: r.ID, Time: r.Time, Tags: r.Tags, Protected: r.Protected, Size: r.Size,
				Added: int64(float64(r.Added) * overhead), Mounted: inUse[r.ID]}
		}
		return volRevs{vol, in}, nil
	}
	all := make([]volRevs, 0, len(vols))
	for _, vol := range vols {
		v, err := load(vol)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, v)
	}
	apply := func(v volRevs, u retention.Usage) (*retention.Plan, error) {
		plan, err := retention.Apply(v.in, a.Policy, retention.Options{Now: now(), Location: loc, Force: a.Force, Usage: u})
		if errors.Is(err, retention.ErrRemovesAll) {
			return plan, &userError{msg: fmt.Sprintf("the policy would remove every revision of %s; nothing was removed", v.name), hint: "check the --keep-* options; --force overrides (the newest revision stays anyway)", code: exitError, err: err}
		}
		if err != nil {
			return plan, fmt.Errorf("plan %s: %w", v.name, err)
		}
		return plan, nil
	}
	// The goal is the repository's, and so is the sudden-growth guard: a
	// volume whose newest revision grew suddenly holds the goal back for
	// every volume, or the others lose their history to make room for it.
	// Each volume is asked with the whole need, whatever order they come
	// in, and what each would remove for it is merged into one order
	// (spaceShares): the least important, or oldest, of all volumes go
	// first, not all of the first volume's.
	guarded := ""
	var share map[string]retention.Usage
	var shareNeed int64                         // the repository's need, when shared out
	full := map[string]*retention.SpaceReport{} // each volume's report for the whole need
	if a.Policy.Space != nil {
		var first []volumePlan
		for _, v := range all {
			if len(v.in) == 0 {
				continue
			}
			plan, err := apply(v, usage)
			if err != nil {
				return nil, nil, err
			}
			full[v.name] = plan.Space
			if plan.Space != nil && plan.Space.Guarded && guarded == "" {
				guarded = v.name
			}
			first = append(first, volumePlan{v.name, plan})
		}
		// The volumes not named grow the repository too: one whose newest
		// revision grew suddenly holds the goal back as well (QA: prune a
		// removed a's history to make room for b's growth).
		if guarded == "" {
			others, err := env.repo.layers.Volumes(ctx)
			if err != nil {
				return nil, nil, err
			}
			for _, o := range others {
				if slices.Contains(vols, o.Name) {
					continue
				}
				v, err := load(o.Name)
				if err != nil || len(v.in) == 0 {
					continue // the guard is a safety rail; an unreadable volume is prune's to report when named
				}
				if plan, err := apply(v, usage); err == nil && plan.Space != nil && plan.Space.Guarded {
					guarded = v.name
					break
				}
			}
		}
		if guarded == "" && len(first) > 1 {
			share, shareNeed = spaceShares(first, a.Policy.Space.Order)
		}
	}
	var plans []prunePlan
	remove := map[string][]string{}
	var freed int64
	for _, v := range all {
		pl := prunePlan{Volume: v.name}
		if len(v.in) == 0 {
			pl.Error, pl.Decisions = "no revisions", []retention.Decision{}
			plans = append(plans, pl)
			continue
		}
		u := usage
		switch {
		case guarded != "" && guarded != v.name:
			u = retention.Usage{Free: 1 << 62} // the goal counts as met here
		case share != nil:
			u = share[v.name]
		}
		plan, err := apply(v, u)
		if err != nil {
			return nil, nil, err
		}
		pl.Decisions, pl.Warnings, pl.Space = plan.Decisions, plan.Warnings, plan.Space
		if guarded != "" && guarded != v.name {
			pl.Warnings = append(pl.Warnings, fmt.Sprintf("space goal held back: the newest revision of %s grew suddenly, so no volume loses history for the goal (check what changed there, then prune with a goal that fits or --space-guard=-1)", guarded))
			// The goal stays unmet, as the guarded volume's own plan says
			// (Apply reports on every volume with revisions).
			held := *full[v.name]
			held.Freed, held.Met, held.Guarded = 0, held.Need == 0, true
			pl.Space = &held
		}
		if plan.Space != nil {
			freed += plan.Space.Freed
		}
		plans = append(plans, pl)
		for _, d := range plan.Decisions {
			if !d.Keep && !d.Deferred {
				remove[v.name] = append(remove[v.name], d.Revision.ID)
			}
		}
	}
	if share != nil {
		// Each plan was asked for its share; the goal and what is met are
		// the repository's.
		for _, pl := range plans {
			if pl.Space != nil {
				pl.Space.Need, pl.Space.Met = shareNeed, freed >= shareNeed
			}
		}
		// On the first plan that is printed: one of a volume without
		// revisions is not.
		if i := slices.IndexFunc(plans, func(pl prunePlan) bool { return pl.Space != nil }); freed < shareNeed && i >= 0 {
			plans[i].Warnings = append(plans[i].Warnings, fmt.Sprintf("space goal not met: removing every revision the other rules and safety rails allow, in all volumes, frees ~%s of %s needed", humanBytes(freed), humanBytes(shareNeed)))
		}
	}
	return plans, remove, nil
}

type volumePlan struct {
	name string
	plan *retention.Plan
}

// spaceShares merges what each volume's plan, asked for the whole need,
// removes for the space goal into one order across volumes (order
// "age": oldest first; else least important first, by each volume's
// rank), takes from it until the need is met, and returns for each
// volume the usage that makes its plan remove exactly its part, and the
// repository's need.
func spaceShares(plans []volumePlan, order string) (map[string]retention.Usage, int64) {
	type cand struct {
		vol  string
		rank int
		time time.Time
		est  int64
	}
	var cands []cand
	var need int64
	for _, vp := range plans {
		if vp.plan.Space == nil {
			continue
		}
		need = max(need, vp.plan.Space.Need)
		for _, d := range vp.plan.Decisions {
			if d.Keep && !d.Deferred {
				continue // a deferred removal counts, as in its volume's plan
			}
			for _, r := range d.Reasons {
				if r.Rank > 0 {
					est := d.Revision.Freeable
					if est <= 0 {
						est = d.Revision.Added
					}
					cands = append(cands, cand{vp.name, r.Rank, d.Revision.Time, est})
					break
				}
			}
		}
	}
	slices.SortStableFunc(cands, func(x, y cand) int {
		if order != "age" && x.rank != y.rank {
			return y.rank - x.rank // the least important first
		}
		return x.time.Compare(y.time)
	})
	perVol := map[string]int64{}
	var got int64
	for _, c := range cands {
		if got >= need {
			break
		}
		perVol[c.vol] += c.est
		got += c.est
	}
	out := map[string]retention.Usage{}
	for _, vp := range plans {
		rep := vp.plan.Space
		if rep == nil {
			continue
		}
		part := perVol[vp.name]
		u := retention.Usage{Free: 1 << 62}
		if rep.MaxSize > 0 {
			u.RepoSize = rep.MaxSize + part
		}
		if rep.MinFree > 0 {
			u.Free = rep.MinFree - part
		}
		out[vp.name] = u
	}
	return out, need
}

// pruneCollect finishes removals and collects garbage after a round,
// repacking segments with more than maxUnused of garbage (0: any).
func pruneCollect(ctx context.Context, env *opEnv, maxUnused float64, res *pruneResult) (store.GCStats, error) {
	// A prune killed or failed half-way is finished here, and GC runs even
	// when this run removed nothing: what an interrupted run released (or
	// a repair found unreferenced) is given back by the next prune.
	warn, err := finishRemovals(ctx, env)
	if err != nil {
		return store.GCStats{}, err
	}
	if warn != "" && !slices.Contains(res.Warnings, warn) {
		res.Warnings = append(res.Warnings, warn)
	}
	if env.progress != nil {
		env.progress(progress{Phase: "collecting garbage"})
	}
	st, err := collectGarbage(ctx, env.repo, maxUnused)
	res.FreedBytes += st.BytesFreed
	if err != nil {
		return st, fmt.Errorf("garbage collection (revisions are removed; rerun prune to finish): %w", err)
	}
	return st, nil
}

// revisionsInUse returns the ids of vol's revisions that are mounted or
// served over NBD (a connection reads it, or an --export names it).
func (s *server) revisionsInUse(ctx context.Context, vol string) map[string]bool {
	in := map[string]bool{}
	s.mu.Lock()
	var browse []*fs.Mount
	for _, m := range s.mounts {
		if m.volume == vol && m.Revision != "" {
			in[m.Revision] = true
		}
		if m.volume == "" && m.m != nil {
			browse = append(browse, m.m) // mount --all
		}
	}
	nbds := make([]*nbdEntry, 0, len(s.nbds))
	for _, n := range s.nbds {
		nbds = append(nbds, n)
	}
	s.mu.Unlock()
	// The resolvers and browse mounts take their own locks: not under s.mu.
	for _, m := range browse {
		for _, r := range m.RevisionsInUse() {
			if r.Volume == vol {
				in[r.ID] = true
			}
		}
	}
	for _, n := range nbds {
		n.res.addServed(ctx, vol, in)
	}
	return in
}

// loadSchedules reads the named schedules of REPO/schedules.json, e.g.
// {"nightly": {"daily": {"interval": "1d", "keep": 7}, "weekly": {"interval": "1w", "keep": 4}}}.
// A repository without the file has none.
func loadSchedules(dir string) (map[string]retention.Schedule, error) {
	path := filepath.Join(dir, "schedules.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	all, err := retention.ParseSchedules(b)
	if err != nil {
		return nil, &userError{msg: "bad schedules file " + path, code: exitUsage, err: err}
	}
	return all, nil
}

// scheduleTags returns the schedule's tags due for a commit at t.
func scheduleTags(ctx context.Context, r *repository, vol, spec string, t time.Time) ([]string, error) {
	schedules, err := loadSchedules(r.dir)
	if err != nil {
		return nil, err
	}
	p, err := retention.Flags{Schedule: spec}.Policy(schedules)
	if err != nil {
		return nil, &userError{msg: "bad --schedule", hint: "name a schedule from REPO/schedules.json or give a spec like daily=1d:7,weekly=1w:4", code: exitUsage, err: err}
	}
	sc := *p.Schedule
	for _, tag := range sc.Tags() {
		if err := layers.CheckTag(tag); err != nil {
			return nil, &userError{msg: "bad --schedule " + spec, hint: "rename that interval in --schedule or REPO/schedules.json; " + tagHint, code: exitUsage, err: err}
		}
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

// Help is shown under `strata prune --help`: every policy in full.
func (c *pruneCmd) Help() string { return retention.FlagHelp() }
