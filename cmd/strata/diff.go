package main

import (
	"context"
	"fmt"
	"os"

	"github.com/strata-backup/strata/layers"
)

type diffCmd struct {
	A string `arg:"" help:"NAME@REV: the older revision."`
	B string `arg:"" help:"NAME@REV: the newer revision (same volume)."`
}

type diffArgs struct {
	Volume string `json:"volume"`
	A      string `json:"a"`
	B      string `json:"b"`
}

type diffResult struct {
	A, B    string
	Entries []layers.DiffEntry
}

func (c *diffCmd) Run(ctx context.Context, g *Globals) error {
	va, ra, pa := splitTarget(c.A)
	vb, rb, pb := splitTarget(c.B)
	if pa != "" || pb != "" {
		return fail(exitUsage, "diff compares whole revisions; filter its output for a path (e.g. | grep ' /etc/')", "diff takes NAME@REV without a :PATH")
	}
	if va != vb {
		return fail(exitUsage, "", "diff compares two revisions of one volume, got %s and %s", va, vb)
	}
	var res diffResult
	if err := call(ctx, g, "diff", diffArgs{va, ra, rb}, &res); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(res)
	}
	var added, removed, changed int
	for _, e := range res.Entries {
		switch e.Change {
		case '+':
			added++
			fmt.Printf("+ %s (%s)\n", e.Path, humanBytes(e.NewSize))
		case '-':
			removed++
			fmt.Printf("- %s (%s)\n", e.Path, humanBytes(e.OldSize))
		default:
			changed++
			if e.Len > 0 { // a block volume's changed range
				fmt.Printf("%c %s bytes %d-%d (%s)\n", e.Change, e.Path, e.Off, e.Off+e.Len-1, humanBytes(e.Len))
				continue
			}
			fmt.Printf("%c %s (%s -> %s)\n", e.Change, e.Path, humanBytes(e.OldSize), humanBytes(e.NewSize))
		}
	}
	fmt.Fprintf(os.Stderr, "%s..%s: %d added, %d removed, %d changed\n", res.A[:8], res.B[:8], added, removed, changed)
	return nil
}

func opDiff(ctx context.Context, env *opEnv, a diffArgs) (any, error) {
	ra, err := resolve(ctx, env.repo.layers, a.Volume, a.A)
	if err != nil {
		return nil, err
	}
	rb, err := resolve(ctx, env.repo.layers, a.Volume, a.B)
	if err != nil {
		return nil, err
	}
	res := diffResult{A: ra.ID, B: rb.ID, Entries: []layers.DiffEntry{}}
	err = env.repo.layers.Diff(ctx, a.Volume, ra.ID, rb.ID, func(e layers.DiffEntry) error {
		res.Entries = append(res.Entries, e)
		return nil
	})
	return res, err
}
