package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/strata-backup/strata/layers"
)

// splitTarget splits NAME@REV[:PATH]; rev is "" when there is no '@'.
func splitTarget(s string) (name, rev, path string) {
	name = s
	if i := strings.IndexByte(s, '@'); i >= 0 {
		name, rev = s[:i], s[i+1:]
		if j := pathColon(rev); j >= 0 {
			rev, path = rev[:j], rev[j+1:]
		}
	}
	return name, rev, path
}

// pathColon returns the index of the ':' that starts the path in REV[:PATH],
// or -1. Times contain ':' themselves (RFC 3339, and the form list prints:
// 2026-11-20 10:00:05), so the path starts after the longest prefix that
// reads as a time.
func pathColon(rev string) int {
	first := strings.IndexByte(rev, ':')
	if first < 0 || len(rev) < 13 || rev[4] != '-' || (rev[10] != 'T' && rev[10] != ' ') {
		return first
	}
	if _, _, ok := layers.ParseTime(rev); ok {
		return -1
	}
	for j := len(rev) - 1; j > 0; j-- {
		if rev[j] == ':' {
			if _, _, ok := layers.ParseTime(rev[:j]); ok {
				return j
			}
		}
	}
	return first
}

// latestRevision is vol's newest revision by time, as the spec "latest"
// names it (imports with --time may be committed out of order).
func latestRevision(ctx context.Context, r *layers.Repo, vol string) (layers.Revision, bool) {
	rev, err := r.Resolve(ctx, vol, "latest", now())
	return rev, err == nil
}

// resolve turns a revision spec into a revision, with messages that list
// what matched.
func resolve(ctx context.Context, r *layers.Repo, volume, spec string) (layers.Revision, error) {
	if spec == "" {
		spec = "latest"
	}
	rev, err := r.Resolve(ctx, volume, spec, now())
	var se *layers.SpecError
	var ar *layers.AgeRangeError
	if errors.As(err, &ar) {
		return rev, &userError{msg: fmt.Sprintf("revision spec %q of %s: %v", spec, volume, ar), hint: "name an older revision by its date (2026-11-20) or id ('strata list " + volume + "' shows them)", code: exitUsage, err: err, quiet: true}
	}
	if errors.As(err, &se) {
		var b strings.Builder
		for i, c := range se.Candidates {
			if i == 10 {
				fmt.Fprintf(&b, "\n  ... and %d more", len(se.Candidates)-10)
				break
			}
			fmt.Fprintf(&b, "\n  %s  %s  %s", c.ID, c.Time.UTC().Format("2006-01-02 15:04:05"), strings.Join(c.Tags, ","))
		}
		if se.Ambiguous {
			return rev, fail(exitError, "use a longer id prefix or an exact time", "revision spec %q of %s is ambiguous; it matches:%s", spec, volume, b.String())
		}
		hint := "specs: latest, ~N or latest~N (N before the latest), TAG, TAG~N (N before the newest TAG, among revisions tagged TAG), an id prefix, a date or time (2026-11-20, 2026-11-20 10:00:05, RFC 3339), an age like 3d"
		if strings.Trim(spec, "~0123456789") == "" && len(spec) < 4 {
			hint = "a number N or ~N counts back from the latest revision (0 is the latest); an id prefix needs at least 4 characters"
		}
		if b.Len() > 0 {
			if all, err := r.Revisions(ctx, volume); err == nil && len(all) > len(se.Candidates) {
				fmt.Fprintf(&b, "\n  (%d of %d; 'strata list %s' shows them all)", len(se.Candidates), len(all), volume)
			}
			return rev, fail(exitError, hint, "no revision of %s matches %q; revisions are:%s", volume, spec, b.String())
		}
		return rev, fail(exitError, hint, "no revision of %s matches %q", volume, spec)
	}
	if err != nil {
		return rev, volumeErr(err, volume)
	}
	return rev, nil
}
