package layers

import (
	"errors"
	"testing"
	"time"
)

func TestResolveAmbiguousPrefix(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	revs := []Revision{
		{ID: "abc123", Seq: 1, Time: t0},
		{ID: "abd456", Seq: 2, Time: t0.Add(time.Hour)},
		{ID: "ffe789", Seq: 3, Time: t0.Add(2 * time.Hour), Tags: []string{"abc"}},
	}
	tests := []struct {
		spec      string
		want      string
		ambiguous bool
		noMatch   bool
	}{
		{spec: "ab", ambiguous: true},
		{spec: "abc1", want: "abc123"},
		{spec: "abd", want: "abd456"},
		{spec: "abc", want: "ffe789"}, // a tag wins over an id prefix
		{spec: "ff", want: "ffe789"},
		{spec: "0f", noMatch: true},
		{spec: "abc~1", noMatch: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := resolveSpec(revs, tt.spec, t0.Add(24*time.Hour))
			var se *SpecError
			switch {
			case tt.ambiguous:
				if !errors.As(err, &se) || !se.Ambiguous || len(se.Candidates) != 2 {
					t.Fatalf("got %v, %v; want ambiguous with 2 candidates", got.ID, err)
				}
			case tt.noMatch:
				if !errors.As(err, &se) || se.Ambiguous {
					t.Fatalf("got %v, %v; want no match", got.ID, err)
				}
			default:
				if err != nil || got.ID != tt.want {
					t.Fatalf("got %q, %v; want %q", got.ID, err, tt.want)
				}
			}
		})
	}
}
