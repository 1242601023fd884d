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

// diffResult is what diff prints with --json. Change is a word: layers'
// one-byte codes came out of encoding/json as numbers ("Change": 43).
type diffResult struct {
	A       string      `json:"a"`
	B       string      `json:"b"`
	Entries []diffEntry `json:"entries"`
}

type diffEntry struct {
	Path string `json:"path"`
	// PathRaw is Path's bytes when they are not UTF-8: JSON's path then
	// holds U+FFFD in their place (rawpath.go).
	PathRaw []byte `json:"path_b64,omitempty"`
	Change  string `json:"change"` // added, removed, modified, type, attributes
	OldSize int64  `json:"old_size"`
	NewSize int64  `json:"new_size"`
	// OldTarget and NewTarget are a symlink's targets, on symlinks only.
	OldTarget *string `json:"old_target,omitempty"`
	NewTarget *string `json:"new_target,omitempty"`
	// Off and Len are the changed byte range of a block volume, on
	// every one of its entries and on no file tree's. Pointers, not
	// omitempty ints: a range at offset 0 lost its "off".
	Off *int64 `json:"off,omitempty"`
	Len *int64 `json:"len,omitempty"`
}

// changeWord names layers.DiffEntry's change codes for --json; the text
// output keeps the codes.
func changeWord(code byte) string {
	switch code {
	case '+':
		return "added"
	case '-':
		return "removed"
	case 'M':
		return "modified"
	case 'T':
		return "type"
	case 'A':
		return "attributes"
	}
	return string(code)
}

func changeCode(word string) byte {
	for _, c := range []byte("+-MTA") {
		if changeWord(c) == word {
			return c
		}
	}
	return '?'
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
	// A bare NAME is staging in mount and NBD: here it would silently
	// have been the latest revision, and 'diff vm@latest vm' said nothing
	// changed while staging had new writes.
	for _, t := range []struct{ arg, rev string }{{c.A, ra}, {c.B, rb}} {
		if t.rev == "" {
			return fail(exitUsage, "commit staging first, then compare "+va+"@~1 "+va+"@latest", "diff compares revisions: %q names no revision (NAME@REV; staging cannot be compared)", t.arg)
		}
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
		e.Path = showPath(orRaw(e.Path, e.PathRaw))
		code := changeCode(e.Change)
		switch code {
		case '+':
			added++
			fmt.Printf("+ %s (%s)\n", e.Path, sizeOrTarget(e.NewSize, e.NewTarget))
		case '-':
			removed++
			fmt.Printf("- %s (%s)\n", e.Path, sizeOrTarget(e.OldSize, e.OldTarget))
		default:
			changed++
			if e.Off != nil && e.Len != nil { // a block volume's changed range
				fmt.Printf("%c %s bytes %d-%d (%s)\n", code, e.Path, *e.Off, *e.Off+*e.Len-1, humanBytes(*e.Len))
				continue
			}
			fmt.Printf("%c %s (%s -> %s)\n", code, e.Path, sizeOrTarget(e.OldSize, e.OldTarget), sizeOrTarget(e.NewSize, e.NewTarget))
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
	res := diffResult{A: ra.ID, B: rb.ID, Entries: []diffEntry{}}
	err = env.repo.layers.Diff(ctx, a.Volume, ra.ID, rb.ID, func(e layers.DiffEntry) error {
		de := diffEntry{Path: e.Path, PathRaw: rawIfInvalid(e.Path), Change: changeWord(e.Change), OldSize: e.OldSize, NewSize: e.NewSize}
		if e.Len > 0 { // a block volume's range; a file tree's entries have none
			de.Off, de.Len = &e.Off, &e.Len
		}
		if e.OldTarget != "" {
			de.OldTarget = &e.OldTarget
		}
		if e.NewTarget != "" {
			de.NewTarget = &e.NewTarget
		}
		res.Entries = append(res.Entries, de)
		return nil
	})
	return res, err
}

// sizeOrTarget is how diff shows one side of an entry: a symlink by its
// target (escaped as paths are), anything else by its size.
func sizeOrTarget(size int64, target *string) string {
	if target != nil {
		return "symlink to " + showPath(*target)
	}
	return humanBytes(size)
}
