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
		if j := strings.IndexByte(rev, ':'); j >= 0 && !looksLikeTime(rev) {
			rev, path = rev[:j], rev[j+1:]
		}
	}
	return name, rev, path
}

// looksLikeTime: RFC 3339 times contain ':' themselves.
func looksLikeTime(rev string) bool {
	return len(rev) >= 13 && rev[4] == '-' && strings.Contains(rev, "T")
}

// resolve turns a revision spec into a revision, with messages that list
// what matched.
func resolve(ctx context.Context, r *layers.Repo, volume, spec string) (layers.Revision, error) {
	if spec == "" {
		spec = "latest"
	}
	rev, err := r.Resolve(ctx, volume, spec, now())
	var se *layers.SpecError
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
		hint := "specs: latest, ~N, TAG, TAG~N, an id prefix, a date or RFC 3339 time, an age like 3d"
		if b.Len() > 0 {
			return rev, fail(exitError, hint, "no revision of %s matches %q; revisions are:%s", volume, spec, b.String())
		}
		return rev, fail(exitError, hint, "no revision of %s matches %q", volume, spec)
	}
	if err != nil {
		return rev, volumeErr(err, volume)
	}
	return rev, nil
}
