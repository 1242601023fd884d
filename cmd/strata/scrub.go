package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/strata-backup/strata/store"
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
	var rep store.ScrubReport
	err := call(ctx, g, "scrub", a, &rep)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(rep)
	}
	fmt.Println(scrubSummary(rep))
	for _, d := range rep.Damaged {
		fmt.Printf("  %s\n", d)
	}
	if !rep.Healthy() {
		return &exitStatus{code: exitError}
	}
	return nil
}

func opScrub(ctx context.Context, env *opEnv, raw json.RawMessage) (any, error) {
	a, err := decode[scrubArgs](raw)
	if err != nil {
		return nil, err
	}
	opts := store.ScrubOptions{ReadData: a.ReadData, Repair: a.Repair}
	if env.progress != nil {
		opts.Progress = func(done, total int64) {
			env.progress(progress{Phase: "scrub", Done: done, Total: total, Unit: "bytes"})
		}
	}
	return env.repo.store.Scrub(ctx, opts)
}

type repairCmd struct {
	RebuildIndex bool `required:"" help:"Rebuild the chunk index (and volumes and revisions) from the shards alone."`
}

func (c *repairCmd) Run(ctx context.Context, g *Globals) error {
	var res map[string]any
	if err := call(ctx, g, "repair", struct{}{}, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	fmt.Println("index rebuilt from the shards")
	return nil
}

func opRepair(ctx context.Context, env *opEnv, raw json.RawMessage) (any, error) {
	if env.srv != nil && (len(env.srv.mountList()) > 0 || len(env.srv.nbds) > 0) {
		return nil, fail(exitError, "unmount everything and stop NBD serving first", "cannot rebuild the index while volumes are in use")
	}
	err := env.repo.store.RebuildIndex(ctx, func(done, total int64) {
		if env.progress != nil {
			env.progress(progress{Phase: "rebuild index", Done: done, Total: total})
		}
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"rebuilt": true}, nil
}
