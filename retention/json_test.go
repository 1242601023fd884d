package retention_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/retention"
)

// A Policy survives a JSON round trip (for per-volume policies in a config
// file); durations are written in the ParseDuration syntax.
func TestPolicyJSON(t *testing.T) {
	s, err := retention.ParseScheduleSpec("daily=1d:7,weekly=1w:4")
	if err != nil {
		t.Fatal(err)
	}
	p := retention.Policy{Last: 3, Daily: retention.Unlimited, Within: retention.MustParseDuration("1y2m"),
		WithinWeekly: retention.MustParseDuration("3m"), KeepTags: [][]string{{"a", "b"}, {}}, Schedule: &s,
		Hanoi: &retention.Hanoi{Discs: 5, Every: retention.Days(2)}, Space: &retention.Space{MaxSize: 1 << 30, Order: "age"}}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, frag := range []string{`"within":"1y2m"`, `"within_weekly":"3m"`, `"schedule":{"daily":{"interval":"1d","keep":7},"weekly":{"interval":"1w","keep":4}}`, `"every":"2d"`} {
		if !strings.Contains(string(data), frag) {
			t.Errorf("%s lacks %s", data, frag)
		}
	}
	if strings.Contains(string(data), "within_daily") {
		t.Errorf("zero duration written: %s", data)
	}
	var back retention.Policy
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, p)
	}
}

// The plan is the data of `strata prune --json`.
func TestPlanJSON(t *testing.T) {
	revs := series(at(t, "2026-11-19T00:00"), at(t, "2026-11-20T00:00"), 12*time.Hour)
	p := apply(t, revs, retention.Policy{Last: 2}, retention.Options{})
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"decisions":[{"revision":{"id":"2026-11-20T00:00","time":"2026-11-20T00:00:00Z"},"keep":true,"reasons":[{"rule":"newest","text":"newest"},{"rule":"last","period":"1/2","text":"last 1/2"}]},` +
		`{"revision":{"id":"2026-11-19T12:00","time":"2026-11-19T12:00:00Z"},"keep":true,"reasons":[{"rule":"last","period":"2/2","text":"last 2/2"}]},` +
		`{"revision":{"id":"2026-11-19T00:00","time":"2026-11-19T00:00:00Z"},"keep":false,"reasons":[{"rule":"none","text":"no rule keeps it"}]}]}`
	if string(data) != want {
		t.Errorf("plan JSON\n got %s\nwant %s", data, want)
	}
}
