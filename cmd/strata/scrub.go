package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
)

type scrubCmd struct {
	ReadData string `optional:"" placeholder:"PCT" help:"Also decrypt and verify chunk data: all of it, or PCT percent (e.g. --read-data=10)."`
	Repair   bool   `help:"Rewrite missing or corrupt shards from parity."`
}

type scrubArgs struct {
	ReadData float64 `json:"read_data"`
	Repair   bool    `json:"repair"`
}

func (c *scrubCmd) Run(ctx context.Context, g *Globals) error {
	a := scrubArgs{Repair: c.Repair}
	if c.ReadData != "" {
		v := strings.TrimSuffix(c.ReadData, "%")
		if v == "true" || v == "all" {
			v = "100"
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 100 {
			return fail(exitUsage, "", "--read-data wants a percentage 0-100, got %q", c.ReadData)
		}
		a.ReadData = f
	}
	var rep scrubResult
	err := call(ctx, g, "scrub", a, &rep)
	if err != nil {
		return err
	}
	if g.JSON {
		if err := printJSON(rep); err != nil {
			return err
		}
	} else {
		printScrub(rep, a)
	}
	if !rep.OK {
		return &exitStatus{code: exitError}
	}
	return nil
}

// scrubResult is store.ScrubReport in a form that survives JSON.
type scrubResult struct {
	Segments      int64          `json:"segments"`
	Shards        int64          `json:"shards"`
	BytesRead     int64          `json:"bytes_read"`
	ChunksChecked int64          `json:"chunks_checked"`
	Damaged       []damageResult `json:"damaged"`
	Orphans       int            `json:"orphans"`
	IndexSuspect  bool           `json:"index_suspect,omitempty"`
	IndexDamage   string         `json:"index_damage,omitempty"`
	OK            bool           `json:"ok"`
}

type damageResult struct {
	Segment   string `json:"segment"`
	Missing   []int  `json:"missing_shards,omitempty"`
	Corrupt   []int  `json:"corrupt_shards,omitempty"`
	BadChunks int    `json:"bad_chunks,omitempty"`
	Lost      bool   `json:"lost"`
	Repaired  bool   `json:"repaired"`
	// Superseded: lost, but every chunk it held is stored again
	// elsewhere (or no longer needed); prune's GC deletes it.
	Superseded bool `json:"superseded,omitempty"`
	// Readable and Rescued: chunks of a lost segment that still read
	// from surviving shards, and those of them --repair stored anew.
	Readable int    `json:"readable_chunks,omitempty"`
	Rescued  int    `json:"rescued_chunks,omitempty"`
	Error    string `json:"error,omitempty"`
	// Affected names what the lost or undecryptable chunks held: files
	// or disk ranges, with the revisions that see them.
	Affected []string `json:"affected,omitempty"`
}

func toScrubResult(r store.ScrubReport) scrubResult {
	out := scrubResult{Segments: r.Segments, Shards: r.Shards, BytesRead: r.BytesRead, ChunksChecked: r.ChunksChecked,
		Orphans: len(r.Orphans), IndexSuspect: r.IndexSuspect, IndexDamage: r.IndexDamage, OK: r.OK(), Damaged: []damageResult{}}
	for _, d := range r.Damaged {
		dr := damageResult{Segment: fmt.Sprintf("%016x", d.Segment), Missing: d.Missing, BadChunks: len(d.BadChunks), Lost: d.Lost, Repaired: d.Repaired, Superseded: d.Superseded, Readable: d.Readable, Rescued: d.Rescued}
		for i := range d.Corrupt {
			dr.Corrupt = append(dr.Corrupt, i)
		}
		dr.Corrupt = append(dr.Corrupt, d.Unusable...)
		sort.Ints(dr.Corrupt)
		if d.Err != nil {
			dr.Error = d.Err.Error()
		}
		out.Damaged = append(out.Damaged, dr)
	}
	return out
}

func printScrub(r scrubResult, a scrubArgs) {
	fmt.Printf("checked %d segments, %d shards, %s", r.Segments, r.Shards, humanBytes(r.BytesRead))
	if a.ReadData > 0 {
		fmt.Printf(", decrypted %d chunks (%g%%)", r.ChunksChecked, a.ReadData)
	}
	fmt.Println()
	// Segments with the same damage print as one line: a lost disk
	// damages every segment alike.
	type group struct {
		desc     string
		segs     []string
		affected []string
	}
	var groups []*group
	byDesc := map[string]*group{}
	lost := false
	for _, d := range r.Damaged {
		lost = lost || (d.Lost && !d.Repaired && !d.Superseded)
		state := "damaged, redundancy reduced"
		switch {
		case d.Repaired:
			state = "repaired"
		case d.Superseded:
			state = "more shards damaged than parity covers, but nothing in it is needed any more (stored again elsewhere): prune's garbage collection removes it"
		case d.Lost:
			state = "LOST: more shards damaged than parity covers"
		case d.Readable > 0:
			// Lost rows, but every chunk needed lies in shards left.
			state = "more shards damaged than parity covers, but every chunk still needed reads from the shards left: nothing is lost, redundancy reduced"
		}
		if d.Readable > 0 && !d.Superseded {
			state += fmt.Sprintf(" (%d chunks still read from the shards left", d.Readable)
			if d.Rescued > 0 {
				state += fmt.Sprintf(", %d moved to a healthy segment", d.Rescued)
			}
			state += ")"
		}
		desc := fmt.Sprintf("missing shards %v, corrupt shards %v, bad chunks %d: %s", d.Missing, d.Corrupt, d.BadChunks, state)
		if d.Error != "" {
			desc += " (" + d.Error + ")"
		}
		g := byDesc[desc]
		if g == nil {
			g = &group{desc: desc}
			byDesc[desc] = g
			groups = append(groups, g)
		}
		g.segs = append(g.segs, d.Segment)
		for _, a := range d.Affected {
			if !slices.Contains(g.affected, a) {
				g.affected = append(g.affected, a)
			}
		}
	}
	for _, g := range groups {
		segs := strings.Join(g.segs, " ")
		if len(g.segs) > 3 {
			segs = fmt.Sprintf("%s %s ... %s (%d segments)", g.segs[0], g.segs[1], g.segs[len(g.segs)-1], len(g.segs))
		}
		fmt.Printf("  segment %s: %s\n", segs, g.desc)
		// What to restore from elsewhere; a whole lost disk set can name
		// every file, so the list stops after a screenful.
		const show = 20
		sort.Strings(g.affected)
		for i, a := range g.affected {
			if i == show {
				fmt.Printf("    ... and %d more (--json lists them all)\n", len(g.affected)-show)
				break
			}
			fmt.Printf("    lost: %s\n", showPath(a))
		}
	}
	switch {
	case r.IndexSuspect:
		fmt.Printf("%s on the shard dirs missing from the index, which an interrupted write does not explain: the index looks lost or damaged; run 'strata repair --rebuild-index' (garbage collection keeps them)\n", count(int64(r.Orphans), "segment"))
	case r.Orphans > 0:
		fmt.Printf("%d orphaned segments (left by an interrupted write); prune's garbage collection removes them\n", r.Orphans)
	}
	if r.IndexDamage != "" {
		fmt.Printf("the index is damaged (%s): run 'strata repair --rebuild-index' to rebuild it from the shards\n", r.IndexDamage)
	}
	switch {
	case r.IndexSuspect, r.IndexDamage != "":
		// said above
	case r.OK && len(r.Damaged) == 0:
		fmt.Println("no damage found")
	case r.OK:
		fmt.Println("all damage repaired: full redundancy restored")
	case a.Repair && lost:
		fmt.Println("some damage could not be repaired (see above). Write the files listed as lost into staging again from another copy (rsync --checksum, since their size and time still match) and commit: the new copies are stored anew and heal every revision that holds the same data")
	case a.Repair:
		fmt.Println("some damage could not be repaired (see above)")
	case lost:
		fmt.Println("data lost: more shards are gone than parity covers; bring back the missing shard dirs if you can. Else write the listed files into staging again from another copy (rsync --checksum, since their size and time still match) and commit: the new copies are stored anew and heal every revision that holds the same data")
	default:
		fmt.Println("damage found: run 'strata scrub --repair' to restore full redundancy")
	}
}

// scrubState is what the last scrub found, kept in REPO/scrub.json so
// that 'strata check' can report damage between scrubs.
type scrubState struct {
	Time     time.Time `json:"time"`
	ReadData float64   `json:"read_data,omitempty"`
	Damaged  int       `json:"damaged"` // segments with reduced redundancy, not repaired
	Lost     int       `json:"lost"`    // segments with data lost, not repaired
	// Index is what was wrong with the index itself: its damaged
	// tables, or that it looks lost; "" when nothing was.
	Index string `json:"index,omitempty"`
}

// health is the finding of the last scrub that matters most, as a
// Nagios code (0 nothing found, 1 redundancy reduced, 2 data or index
// lost) and a line saying what to do.
func (sc *scrubState) health() (int, string) {
	when := sc.Time.UTC().Format("2006-01-02 15:04")
	switch {
	case sc.Index != "":
		return 2, fmt.Sprintf("scrub of %s found the index %s: run 'strata repair --rebuild-index'", when, sc.Index)
	case sc.Lost > 0:
		return 2, fmt.Sprintf("scrub of %s found data lost in %s: run 'strata scrub' for the files", when, count(int64(sc.Lost), "segment"))
	case sc.Damaged > 0:
		return 1, fmt.Sprintf("scrub of %s found %s with reduced redundancy: run 'strata scrub --repair'", when, count(int64(sc.Damaged), "segment"))
	}
	return 0, ""
}

func scrubStatePath(dir string) string { return filepath.Join(dir, "scrub.json") }

// saveScrubState records r as the last scrub's findings.
func saveScrubState(dir string, r scrubResult, a scrubArgs) error {
	st := scrubState{Time: now().UTC(), ReadData: a.ReadData}
	switch {
	case r.IndexDamage != "":
		st.Index = "damaged (" + r.IndexDamage + ")"
	case r.IndexSuspect:
		st.Index = "lost or damaged (segments on the shard dirs it does not know)"
	}
	for _, d := range r.Damaged {
		switch {
		case d.Repaired, d.Superseded:
		case d.Lost:
			st.Lost++
		default:
			st.Damaged++
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := scrubStatePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, scrubStatePath(dir))
}

// loadScrubState returns the last scrub's findings, nil if none ran.
func loadScrubState(dir string) *scrubState {
	b, err := os.ReadFile(scrubStatePath(dir))
	if err != nil {
		return nil
	}
	var st scrubState
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &st
}

func opScrub(ctx context.Context, env *opEnv, a scrubArgs) (any, error) {
	opts := store.ScrubOptions{ReadData: a.ReadData, Repair: a.Repair}
	if env.progress != nil {
		opts.Progress = func(done, total int64) {
			env.progress(progress{Phase: "scrub: segments", Done: done, Total: total})
		}
	}
	rep, err := env.repo.store.Scrub(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := toScrubResult(rep)
	if err := describeDamage(ctx, env, rep, &out); err != nil {
		env.repo.log.Warn("scrub: name what the damage affects", "err", err)
	}
	if err := saveScrubState(env.repo.dir, out, a); err != nil {
		env.repo.log.Warn("scrub: record the result for strata check", "err", err)
	}
	return out, nil
}

// describeDamage fills Affected for segments whose chunks cannot be read
// back: the files and revisions a user has to restore from elsewhere.
func describeDamage(ctx context.Context, env *opEnv, rep store.ScrubReport, out *scrubResult) error {
	segOf := map[chunk.ID]int{}
	var ids []chunk.ID
	for i, d := range rep.Damaged {
		var lost []chunk.ID
		if d.Lost && !d.Repaired {
			lost = append(lost, d.Chunks...)
		}
		lost = append(lost, d.BadChunks...)
		for _, id := range lost {
			segOf[id] = i
			ids = append(ids, id)
		}
	}
	uses, err := env.repo.layers.ChunkUsers(ctx, ids)
	if err != nil {
		return err
	}
	for _, u := range uses {
		d := &out.Damaged[segOf[u.Chunk]]
		if s := u.String(); !slices.Contains(d.Affected, s) {
			d.Affected = append(d.Affected, s)
		}
	}
	return nil
}

type repairCmd struct {
	RebuildIndex      bool `xor:"what" required:"" help:"Rebuild the chunk index (and volumes and revisions) from the shards alone."`
	RecountReferences bool `xor:"what" required:"" help:"Set every chunk's reference count from what the volumes and revisions name. Gives back the space a crash leaked (chunks an unfinished write had taken), and heals counts that a server killed under an earlier strata may have left short, which a later prune could turn into deleted data. Needs the repository to itself: run 'strata stop' first."`
}

func (c *repairCmd) Run(ctx context.Context, g *Globals) error {
	if c.RecountReferences {
		return recountReferences(ctx, g)
	}
	var res map[string]any
	if err := call(ctx, g, "repair", struct{}{}, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	fmt.Printf("index rebuilt from the shards: %v volumes, %v revisions, %v chunks (%v unreferenced, freed by the next prune)\n",
		res["volumes"], res["revisions"], res["chunks"], res["unreferenced"])
	if rn, _ := res["renamed"].([]any); len(rn) > 0 {
		for _, x := range rn {
			if m, ok := x.(map[string]any); ok {
				fmt.Printf("volume %v: its name was taken by a volume created after the index was lost; its revisions are back as volume %v\n", m["volume"], m["as"])
			}
		}
	}
	if m, _ := res["missing"].(float64); m > 0 {
		fmt.Printf("DAMAGE: revisions reference %v chunks that no shard holds; 'strata scrub' shows which segments are lost\n", m)
		return &exitStatus{code: exitError}
	}
	return nil
}

func opRepair(ctx context.Context, env *opEnv, raw json.RawMessage) (any, error) {
	if env.srv != nil && (len(env.srv.mountList()) > 0 || len(env.srv.nbds) > 0) {
		return nil, fail(exitError, "unmount everything and stop NBD serving first", "cannot rebuild the index while volumes are in use")
	}
	// Chunks first (from segment trailers), then volumes and revisions
	// (from the layer records each commit stored as meta chunks).
	err := env.repo.store.RebuildIndex(ctx, func(done, total int64) {
		if env.progress != nil {
			env.progress(progress{Phase: "rebuild chunk index: segments", Done: done, Total: total})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild chunk index: %w", err)
	}
	if env.progress != nil {
		env.progress(progress{Phase: "rebuild volumes and revisions"})
	}
	rb, err := env.repo.layers.RebuildFrom(ctx, env.repo.store.Walk)
	if err != nil {
		return nil, fmt.Errorf("rebuild volumes and revisions: %w", err)
	}
	// The rebuilt chunk index gives every chunk one reference; put the
	// true counts back from what the volumes reference, so GC frees
	// exactly the garbage (it refuses to run until this is done).
	refs, err := setReferencesFromVolumes(ctx, env)
	if err != nil {
		return nil, err
	}
	vols, err := env.repo.layers.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	revs := 0
	for _, v := range vols {
		revs += v.Revisions
	}
	renamed := []map[string]string{}
	for _, r := range rb.Renamed {
		renamed = append(renamed, map[string]string{"volume": r[0], "as": r[1]})
	}
	return map[string]any{"rebuilt": true, "volumes": len(vols), "revisions": revs,
		"chunks": refs.Chunks, "unreferenced": refs.Unreferenced, "missing": refs.Missing,
		"renamed": renamed}, nil
}

// recountReferences is 'repair --recount-references'.
func recountReferences(ctx context.Context, g *Globals) error {
	var res recountResult
	if err := call(ctx, g, "repair.recount", struct{}{}, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	fmt.Printf("chunk references recounted: %s, %s changed (%s now unreferenced, freed by the next prune)\n",
		count(res.Chunks, "chunk"), count(res.Changed, "count"), count(res.Unreferenced, "chunk"))
	if res.Missing > 0 {
		fmt.Printf("DAMAGE: revisions reference %s that no shard holds; 'strata scrub' shows which segments are lost\n", count(res.Missing, "chunk"))
		return &exitStatus{code: exitError}
	}
	return nil
}

type recountResult struct {
	Chunks       int64 `json:"chunks"`
	References   int64 `json:"references"`
	Changed      int64 `json:"changed"`
	Unreferenced int64 `json:"unreferenced"`
	Missing      int64 `json:"missing"`
}

// opRecount sets the store's reference counts from layers' References.
// SetReferences must not run beside a Put or Release, and a server may
// start one at any time (a commit, a flush of staging): so only without
// a server, as finishRemovals.
func opRecount(ctx context.Context, env *opEnv, _ struct{}) (any, error) {
	if env.srv != nil {
		return nil, fail(exitError, "run 'strata stop' first (it unmounts everything), then repair again", "recounting references needs the repository to itself, and a server is running")
	}
	rep, err := setReferencesFromVolumes(ctx, env)
	if err != nil {
		return nil, err
	}
	return recountResult{Chunks: rep.Chunks, References: rep.References, Changed: rep.Changed,
		Unreferenced: rep.Unreferenced, Missing: rep.Missing}, nil
}

// setReferencesFromVolumes sets every chunk's reference count from what the
// volumes and revisions name (after an index rebuild, or on request); the
// caller makes sure nothing puts or releases chunks meanwhile.
func setReferencesFromVolumes(ctx context.Context, env *opEnv) (store.RefsReport, error) {
	if env.progress != nil {
		env.progress(progress{Phase: "recount chunk references"})
	}
	rep, err := env.repo.store.SetReferences(ctx, func(yield func(chunk.ID) error) error {
		return env.repo.layers.References(ctx, yield)
	})
	if err != nil {
		return rep, fmt.Errorf("recount chunk references: %w", err)
	}
	if rep.Missing > 0 {
		env.repo.log.Error("revisions reference chunks the shards no longer hold", "missing", rep.Missing)
	}
	return rep, nil
}
