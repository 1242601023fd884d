package nbd_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

func TestNbdinfo(t *testing.T) {
	needTools(t, "nbdinfo")
	img, lay := mixedImage(1, 8<<20, 64<<10)
	ro := memImage(t, img, nbdtest.MemOptions{ReadOnly: true})
	rw := nbdtest.NewMem(4<<20, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"vm@1": ro, "vm": rw}), nbd.Options{})

	t.Run("list", func(t *testing.T) {
		for _, uri := range []string{ts.unixURI(""), ts.tcpURI("")} {
			out := run(t, "nbdinfo", "--list", "--json", uri)
			var got struct {
				Exports []struct {
					Name     string `json:"export-name"`
					Size     int64  `json:"export-size"`
					ReadOnly bool   `json:"is_read_only"`
				} `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
			}
			var names []string
			for _, e := range got.Exports {
				names = append(names, e.Name)
				want := map[string]struct {
					size int64
					ro   bool
				}{"vm@1": {8 << 20, true}, "vm": {4 << 20, false}}[e.Name]
				if e.Size != want.size || e.ReadOnly != want.ro {
					t.Errorf("%s: export %q size %d read-only %v, want %d %v", uri, e.Name, e.Size, e.ReadOnly, want.size, want.ro)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"vm", "vm@1"}) {
				t.Errorf("%s: exports %q, want [vm vm@1]\n%s", uri, names, out)
			}
		}
	})

	t.Run("flags", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			want map[string]bool
		}{
			{"vm@1", map[string]bool{"is_read_only": true, "can_multi_conn": true, "can_flush": true, "can_df": true,
				"can_trim": false, "can_zero": false, "can_cache": false}},
			{"vm", map[string]bool{"is_read_only": false, "can_multi_conn": false, "can_flush": true, "can_fua": true,
				"can_trim": true, "can_zero": true, "can_df": true}},
		} {
			out := run(t, "nbdinfo", "--json", ts.unixURI(tc.name))
			var got struct {
				Exports []map[string]any `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Exports) != 1 {
				t.Fatalf("nbdinfo --json: %v\n%s", err, out)
			}
			for k, v := range tc.want {
				if got.Exports[0][k] != v {
					t.Errorf("%s: %s = %v, want %v", tc.name, k, got.Exports[0][k], v)
				}
			}
			if ctx, _ := got.Exports[0]["contexts"].([]any); !slices.Contains(ctx, any("base:allocation")) {
				t.Errorf("%s: contexts %v lack base:allocation", tc.name, got.Exports[0]["contexts"])
			}
		}
	})

	t.Run("map", func(t *testing.T) {
		out := run(t, "nbdinfo", "--map", "--json", ts.tcpURI("vm@1"))
		var got []struct {
			Offset int64 `json:"offset"`
			Length int64 `json:"length"`
			Type   int   `json:"type"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
		}
		pos := int64(0)
		for _, e := range got {
			if e.Offset != pos {
				t.Fatalf("map entry at %d, want %d:\n%s", e.Offset, pos, out)
			}
			for off := e.Offset; off < e.Offset+e.Length; off += lay.block {
				wantType := 3 // hole, zero
				if lay.data[off/lay.block] {
					wantType = 0
				}
				if e.Type != wantType {
					t.Fatalf("block at %d has type %d, want %d:\n%s", off, e.Type, wantType, out)
				}
			}
			pos += e.Length
		}
		if pos != lay.size {
			t.Errorf("map covers %d bytes, want %d", pos, lay.size)
		}
	})

	t.Run("unknown export", func(t *testing.T) {
		out, err := runErr("nbdinfo", ts.unixURI("nope"))
		if err == nil {
			t.Fatalf("nbdinfo of an unknown export succeeded:\n%s", out)
		}
		// libnbd reports NBD_REP_ERR_UNKNOWN as ENOENT.
		if !strings.Contains(out, "No such file or directory") {
			t.Errorf("error is not NBD_REP_ERR_UNKNOWN:\n%s", out)
		}
	})
}
