package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strata-backup/strata/layers"
)

type listCmd struct {
	Volume string `arg:"" optional:"" help:"Only this volume."`
	Tag    string `placeholder:"T" help:"Only revisions with tag T."`
}

type listArgs struct {
	Volume string `json:"volume,omitempty"`
	Tag    string `json:"tag,omitempty"`
}

func (c *listCmd) Run(ctx context.Context, g *Globals) error {
	var revs []layers.Revision
	if err := call(ctx, g, "list", listArgs{c.Volume, c.Tag}, &revs); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(revisionsOut(revs))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (UTC)\tVOLUME\tID\tSIZE\tADDED\tDURATION\tTAGS")
	var size, added int64
	for _, r := range revs {
		tags := strings.Join(r.Tags, ",")
		if r.Protected {
			tags = strings.TrimPrefix(tags+",protected", ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format("2006-01-02 15:04:05"), r.Volume, r.ID[:min(8, len(r.ID))],
			humanBytes(r.Size), humanBytes(r.Added), r.Duration.Round(time.Second), tags)
		size += r.Size
		added += r.Added
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// "stored" read like the repository's size, which status gives
	// (parity included, and what pruned revisions shared stays counted
	// here): this is the sum of the ADDED column.
	fmt.Printf("%s, %s added by them (the repository's size: strata status)\n", count(int64(len(revs)), "revision"), humanBytes(added))
	return nil
}

func opList(ctx context.Context, env *opEnv, a listArgs) (any, error) {
	var names []string
	if a.Volume != "" {
		names = []string{a.Volume}
	} else {
		vols, err := env.repo.layers.Volumes(ctx)
		if err != nil {
			return nil, err
		}
		for _, v := range vols {
			names = append(names, v.Name)
		}
	}
	out := []layers.Revision{}
	for _, n := range names {
		revs, err := env.repo.layers.Revisions(ctx, n)
		if err != nil {
			return nil, volumeErr(err, n)
		}
		for _, r := range revs {
			if a.Tag == "" || slices.Contains(r.Tags, a.Tag) {
				out = append(out, r)
			}
		}
	}
	slices.SortStableFunc(out, func(x, y layers.Revision) int { return x.Time.Compare(y.Time) })
	return out, nil
}
