package main

import (
	"context"
	"fmt"
)

type protectCmd struct {
	Target string `arg:"" help:"NAME@REV to protect from prune."`
}

type unprotectCmd struct {
	Target string `arg:"" help:"NAME@REV to make prunable again."`
}

type protectArgs struct {
	Volume  string `json:"volume"`
	Rev     string `json:"rev"`
	Protect bool   `json:"protect"`
}

func (c *protectCmd) Run(ctx context.Context, g *Globals) error {
	return setProtected(ctx, g, c.Target, true)
}

func (c *unprotectCmd) Run(ctx context.Context, g *Globals) error {
	return setProtected(ctx, g, c.Target, false)
}

func setProtected(ctx context.Context, g *Globals, target string, on bool) error {
	vol, rev, _ := splitTarget(target)
	if rev == "" {
		return fail(exitUsage, "", "name a revision: %s@REV", vol)
	}
	var id string
	if err := call(ctx, g, "protect", protectArgs{vol, rev, on}, &id); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(struct {
			Volume    string `json:"volume"`
			ID        string `json:"id"`
			Protected bool   `json:"protected"`
		}{vol, id, on})
	}
	word := "protected"
	if !on {
		word = "unprotected"
	}
	fmt.Printf("%s %s@%s\n", word, vol, id)
	return nil
}

func opProtect(ctx context.Context, env *opEnv, a protectArgs) (any, error) {
	r, err := resolve(ctx, env.repo.layers, a.Volume, a.Rev)
	if err != nil {
		return nil, err
	}
	return r.ID, env.repo.layers.SetProtected(ctx, a.Volume, r.ID, a.Protect)
}
