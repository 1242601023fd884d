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
	"github.com/strata-backup/strata/store"
)

type statusCmd struct{}

type volumeStatus struct {
	layers.VolumeInfo
	Last *layers.Revision `json:"last,omitempty"`
}

type statusResult struct {
	Repo    string         `json:"repo"`
	Server  bool           `json:"server"`
	Volumes []volumeStatus `json:"volumes"`
	Mounts  []mountInfo    `json:"mounts"`
	// DeadMounts are mounts of this repository whose server stopped
	// (killed, crashed) and that nobody unmounted since.
	DeadMounts []deadMountInfo `json:"dead_mounts"`
	Exports    []nbdInfo       `json:"exports"`
	Store      store.Stats     `json:"store"`
	Parity     int             `json:"parity_shards"`
	// LastScrub is what the last scrub found (nil: none ran).
	LastScrub *scrubState `json:"last_scrub,omitempty"`
}

func (c *statusCmd) Run(ctx context.Context, g *Globals) error {
	var st statusResult
	if err := call(ctx, g, "status", struct{}{}, &st); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(statusOut(st))
	}
	server := "no server running"
	if st.Server {
		server = "server running"
	}
	fmt.Printf("repository %s (%s)\n", st.Repo, server)
	// Avail counts data new backups can still store, parity aside (df
	// shows about (K+M)/K times as much free; QA read it as df's free and
	// found a third missing), and the store's reserves aside (QA saw 40
	// MiB of room, then ENOSPC for 20).
	fmt.Printf("stored %s in %d chunks, %d segments; room for %s more data (parity and reserves aside)\n",
		humanBytes(st.Store.ShardBytes), st.Store.Chunks, st.Store.Segments, humanBytes(int64(st.Store.Avail)))
	if len(st.Store.MissingShardDirs) > 0 {
		fmt.Printf("DEGRADED: shard dirs %v are missing or unusable; reads reconstruct from parity — bring the disk back or run 'strata scrub --repair'\n", st.Store.MissingShardDirs)
	}
	if sc := st.LastScrub; sc != nil {
		if c, msg := sc.health(); c > 0 {
			fmt.Printf("%s: %s\n", []string{"", "DEGRADED", "DAMAGED"}[c], msg)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tTYPE\tREVISIONS\tLAST BACKUP (UTC)\tAGE")
	for _, v := range st.Volumes {
		last, age := "never", "-"
		if v.Last != nil {
			last = v.Last.Time.UTC().Format("2006-01-02 15:04:05")
			age = humanAge(time.Since(v.Last.Time))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Name, v.Type, v.Revisions, last, age)
	}
	tw.Flush()
	for _, v := range st.Volumes {
		switch {
		case v.LostBlocks > 0:
			fmt.Printf("LOST DATA: staging of %s lost at least %d blocks written after the last flush in a crash (found %s); rerun the copy, then 'strata commit %s --allow-lost'\n",
				v.Name, v.LostBlocks, v.LostAt.UTC().Format("2006-01-02 15:04:05 UTC"), v.Name)
		case v.LostFiles > 0:
			fmt.Printf("LOST DATA: staging of %s has %d files whose data a crash lost; run the backup again before 'strata commit %s'\n",
				v.Name, v.LostFiles, v.Name)
		}
		if !v.Uncommitted.IsZero() && v.LostFiles == 0 && v.LostBlocks == 0 && v.LostChanges.IsZero() {
			fmt.Printf("staging of %s has changes not yet committed (since %s); 'strata commit %s' makes a revision of them\n",
				v.Name, v.Uncommitted.UTC().Format("2006-01-02 15:04:05 UTC"), v.Name)
		}
		if !v.LostChanges.IsZero() {
			fmt.Printf("LOST DATA: staging of %s may have lost the changes made after %s (the server stopped before saving them); run the backup again before 'strata commit %s'\n",
				v.Name, v.LostChanges.UTC().Format("2006-01-02 15:04:05 UTC"), v.Name)
		}
	}
	for _, m := range st.Mounts {
		what := m.Target
		if m.Revision != "" {
			what += "@" + m.Revision[:8]
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		fmt.Printf("mount %s %s (%s)\n", m.Mountpoint, what, mode)
	}
	for _, m := range st.DeadMounts {
		fmt.Printf("mount %s dead (the server that served it stopped; 'strata umount %s' clears it, or mount again)\n", m.Mountpoint, m.Mountpoint)
	}
	for _, n := range st.Exports {
		clients := "no clients"
		if len(n.Clients) > 0 {
			clients = "clients: " + describeClients(n.Clients)
		}
		fmt.Printf("nbd %s (%s)\n", n.Listen, clients)
	}
	return nil
}

func opStatus(ctx context.Context, env *opEnv, _ json.RawMessage) (any, error) {
	st := statusResult{Repo: env.repo.dir, Server: env.srv != nil, Mounts: []mountInfo{}, Exports: []nbdInfo{}, Parity: env.repo.cfg.ParityShards}
	vols, err := env.repo.layers.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		vs := volumeStatus{VolumeInfo: v}
		if last, ok := latestRevision(ctx, env.repo.layers, v.Name); ok {
			vs.Last = &last
		}
		st.Volumes = append(st.Volumes, vs)
	}
	if st.Store, err = env.repo.store.Stats(ctx); err != nil {
		return nil, err
	}
	st.LastScrub = loadScrubState(env.repo.dir)
	served := func(string) bool { return false }
	if env.srv != nil {
		served = env.srv.serves
	}
	st.DeadMounts = deadMounts(env.repo.dir, served)
	if env.srv != nil {
		st.Mounts = env.srv.mountList()
		env.srv.mu.Lock()
		for _, n := range env.srv.nbds {
			info := n.nbdInfo
			info.Clients = n.srv.Connections()
			st.Exports = append(st.Exports, info)
		}
		env.srv.mu.Unlock()
	}
	return st, nil
}

// checkCmd is a Nagios-style monitoring check.
type checkCmd struct {
	Warn string `default:"26h" help:"Warn when a volume's latest revision is older than this: an age as revision specs take it (26h, 3d, 1w, 1d12h; m is minutes, while prune's --keep-within reads m as months, as restic does)."`
	Crit string `default:"50h" help:"Critical when older than this (or a volume has none); same form as --warn."`
}

func (c *checkCmd) Run(ctx context.Context, g *Globals) error {
	warn, err1 := layers.ParseAge(c.Warn)
	crit, err2 := layers.ParseAge(c.Crit)
	for _, f := range []struct {
		flag string
		err  error
	}{{"--warn", err1}, {"--crit", err2}} {
		var ar *layers.AgeRangeError
		switch {
		case errors.As(f.err, &ar):
			// It wrapped around before: 300y read as an age below 200y.
			fmt.Printf("STRATA UNKNOWN - bad %s: %v\n", f.flag, f.err)
			return &exitStatus{code: 3}
		case f.err != nil:
			fmt.Println("STRATA UNKNOWN - bad --warn/--crit (use ages like 26h, 3d or 1w)")
			return &exitStatus{code: 3}
		}
	}
	if crit < warn {
		fmt.Printf("STRATA UNKNOWN - --crit %s is below --warn %s (swapped?)\n", c.Crit, c.Warn)
		return &exitStatus{code: 3}
	}
	var st statusResult
	if err := call(ctx, g, "status", struct{}{}, &st); err != nil {
		fmt.Printf("STRATA UNKNOWN - %v\n", err)
		return &exitStatus{code: 3}
	}
	code, worst := 0, ""
	var msgs []string
	for _, v := range st.Volumes {
		if v.Last == nil {
			msgs = append(msgs, v.Name+": no revisions")
			code = 2
			continue
		}
		age := time.Since(v.Last.Time)
		switch {
		case age < -time.Minute:
			// Set by a wrong clock: the age says nothing about whether
			// backups still run.
			code = max(code, 1)
			msgs = append(msgs, fmt.Sprintf("%s: newest revision dated in the future (%s)", v.Name, v.Last.Time.UTC().Format(time.RFC3339)))
			continue
		case age > crit:
			code = 2
			worst = v.Name
		case age > warn && code < 1:
			code = 1
			worst = v.Name
		}
		msgs = append(msgs, fmt.Sprintf("%s: %s old", v.Name, humanAge(age)))
	}
	_ = worst
	// Problems with the repository itself go first.
	var repo []string
	if n := len(st.Store.MissingShardDirs); n > 0 {
		code = max(code, 1)
		if n > st.Parity {
			code = 2
		}
		repo = append(repo, fmt.Sprintf("shard dirs %v missing", st.Store.MissingShardDirs))
	}
	if sc := st.LastScrub; sc != nil {
		if c, msg := sc.health(); c > 0 {
			code = max(code, c)
			repo = append(repo, msg)
		}
	}
	// A crash lost staging data: the next commit will refuse, so the
	// next backup fails unless someone looks.
	for _, v := range st.Volumes {
		switch {
		case v.LostBlocks > 0:
			code = max(code, 1)
			repo = append(repo, fmt.Sprintf("staging of %s lost %d blocks in a crash: rerun the copy, then 'strata commit %s --allow-lost'", v.Name, v.LostBlocks, v.Name))
		case v.LostFiles > 0:
			code = max(code, 1)
			repo = append(repo, fmt.Sprintf("staging of %s has %s whose data a crash lost: run the backup again", v.Name, count(int64(v.LostFiles), "file")))
		}
	}
	if n := st.Store.DegradedReads; n > 0 {
		code = max(code, 1)
		repo = append(repo, fmt.Sprintf("%s needed parity since the server started: run 'strata scrub'", count(n, "read")))
	}
	// Backups are refused once only the reserve is left; warn while the
	// room above it is less than the reserve again.
	if st.Store.Capacity > 0 && st.Store.Free < 2*st.Store.Reserve {
		code = max(code, 1)
		left := int64(st.Store.Free) - int64(st.Store.Reserve)
		repo = append(repo, fmt.Sprintf("repository nearly full: %s left for backups; 'strata prune' gives space back", humanBytes(max(left, 0))))
	}
	msgs = append(repo, msgs...)
	label := []string{"OK", "WARNING", "CRITICAL"}[code]
	fmt.Printf("STRATA %s - %s; %s | stored=%dB free=%dB\n", label, count(int64(len(st.Volumes)), "volume"), strings.Join(msgs, "; "), st.Store.ShardBytes, st.Store.Free)
	if code != 0 {
		return &exitStatus{code: code}
	}
	return nil
}
