package layers_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

// dumpTree renders a whole tree as sorted text lines (paths, attributes,
// content hashes, xattrs), to compare trees across time.
func dumpTree(t testing.TB, tr *layers.Tree) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	var walk func(ino layers.Ino, path string)
	walk = func(ino layers.Ino, path string) {
		var ents []layers.Dirent
		if err := tr.ReadDir(ctx, ino, "", func(d layers.Dirent) bool { ents = append(ents, d); return true }); err != nil {
			t.Fatalf("readdir %s: %v", path, err)
		}
		for _, d := range ents {
			p := path + "/" + d.Name
			a, err := tr.GetAttr(ctx, d.Ino)
			if err != nil {
				t.Fatalf("getattr %s: %v", p, err)
			}
			line := fmt.Sprintf("%s ino=%d mode=%o uid=%d nlink=%d size=%d mtime=%d", p, a.Ino, a.Mode, a.Uid, a.Nlink, a.Size, a.Mtime.UnixNano())
			switch a.Mode & syscall.S_IFMT {
			case syscall.S_IFREG:
				buf := make([]byte, a.Size)
				if n, err := tr.ReadAt(ctx, d.Ino, buf, 0); err != nil || int64(n) != a.Size {
					t.Fatalf("read %s: %d %v", p, n, err)
				}
				line += fmt.Sprintf(" sha=%x", sha256.Sum256(buf))
			case syscall.S_IFLNK:
				target, err := tr.Readlink(ctx, d.Ino)
				if err != nil {
					t.Fatal(err)
				}
				line += " -> " + target
			}
			xs, err := tr.ListXattr(ctx, d.Ino)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range xs {
				v, _ := tr.GetXattr(ctx, d.Ino, x)
				line += fmt.Sprintf(" %s=%q", x, v)
			}
			lines = append(lines, line)
			if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				walk(d.Ino, p)
			}
		}
	}
	walk(layers.RootIno, "")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestRevisionsStayImmutable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	st := e.staging(t, "v")
	rng := rand.New(rand.NewSource(11))
	var dumps []string
	var ids []string
	var inos []layers.Ino
	for round := 0; round < 6; round++ {
		// Mutate: new files, overwrite, truncate, unlink, rename, xattrs.
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("f%d", rng.Intn(8))
			a, err := st.Tree().Lookup(ctx, layers.RootIno, name)
			if errors.Is(err, layers.ErrNotFound) {
				a, err = st.Create(ctx, layers.RootIno, name, 0o644, 0, 0, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			inos = append(inos, a.Ino)
			p := make([]byte, rng.Intn(1<<20)+1)
			rng.Read(p)
			if _, err := st.WriteAt(ctx, a.Ino, p, int64(rng.Intn(1<<20))); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(2) == 0 {
				if err := st.FlushFile(ctx, a.Ino, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		ino := inos[rng.Intn(len(inos))]
		size := int64(rng.Intn(100))
		_, _ = st.SetAttr(ctx, ino, layers.SetAttr{Size: &size})
		_ = st.SetXattr(ctx, ino, "user.round", []byte(fmt.Sprint(round)), 0)
		_ = st.Unlink(ctx, layers.RootIno, fmt.Sprintf("f%d", rng.Intn(8)))
		_ = st.Rename(ctx, layers.RootIno, fmt.Sprintf("f%d", rng.Intn(8)), layers.RootIno, fmt.Sprintf("f%d", rng.Intn(8)), 0)
		if _, err := st.Mkdir(ctx, layers.RootIno, fmt.Sprintf("d%d", round), 0o700, 0, 0); err != nil {
			t.Fatal(err)
		}
		want := dumpTree(t, st.Tree())
		rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Tags: []string{"r"}})
		if err != nil {
			t.Fatal(err)
		}
		dumps = append(dumps, want)
		ids = append(ids, rev.ID)
		if round == 3 {
			e.reopen(t)
			st = e.staging(t, "v")
		}
		for i, id := range ids {
			snap, err := e.repo.Snapshot(ctx, "v", id)
			if err != nil {
				t.Fatal(err)
			}
			if got := dumpTree(t, snap); got != dumps[i] {
				t.Fatalf("round %d: revision %d changed:\n got %s\nwant %s", round, i, got, dumps[i])
			}
		}
		if got := dumpTree(t, st.Tree()); got != want {
			t.Fatalf("round %d: staging differs from what was committed", round)
		}
	}
	revs, err := e.repo.Revisions(ctx, "v")
	if err != nil || len(revs) != 6 {
		t.Fatalf("revisions: %d, %v", len(revs), err)
	}
	// Protection markers are chunks the revisions hold too.
	for _, p := range []struct {
		id string
		on bool
	}{{ids[1], true}, {ids[2], true}, {ids[2], false}} {
		if err := e.repo.SetProtected(ctx, "v", p.id, p.on); err != nil {
			t.Fatal(err)
		}
	}
	// Removing the volume releases every chunk it held. A protected
	// revision stops it, force or not: force removed it unannounced.
	for _, force := range []bool{false, true} {
		err := e.repo.RemoveVolume(ctx, "v", force)
		if he := (*layers.HasRevisionsError)(nil); !errors.As(err, &he) || he.Revisions != 6 || len(he.Protected) != 1 || he.Protected[0] != ids[1] {
			t.Fatalf("remove (force %v) with %s protected: %v, want a HasRevisionsError naming it", force, ids[1], err)
		}
	}
	if _, err := e.repo.Volume(ctx, "v"); err != nil {
		t.Fatalf("volume after a refused remove: %v", err)
	}
	if err := e.repo.SetProtected(ctx, "v", ids[1], false); err != nil {
		t.Fatal(err)
	}
	if err := e.repo.RemoveVolume(ctx, "v", false); err == nil {
		t.Fatal("remove without force succeeded")
	} else if he := (*layers.HasRevisionsError)(nil); !errors.As(err, &he) || he.Revisions != 6 || len(he.Protected) != 0 {
		t.Fatalf("remove without force: %v", err)
	}
	if err := e.repo.RemoveVolume(ctx, "v", true); err != nil {
		t.Fatal(err)
	}
	for _, k := range []chunk.Kind{chunk.KindData, chunk.KindMeta} {
		if chunks, refs := e.cs.Refs(k); chunks != 0 || refs != 0 {
			t.Errorf("after remove: %d %v chunks with %d refs left", chunks, k, refs)
		}
	}
	if _, err := e.repo.Volume(ctx, "v"); !errors.Is(err, layers.ErrUnknownVolume) {
		t.Errorf("volume after remove: %v", err)
	}
	if _, err := st.Create(ctx, layers.RootIno, "late", 0o644, 0, 0, 0); !errors.Is(err, layers.ErrUnknownVolume) {
		t.Errorf("create through a removed volume's staging: %v", err)
	}
}

func TestCommitStats(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64 // layers' clock, in Unix ns
	set := func(t time.Time) { clock.Store(t.UnixNano()) }
	set(t0.Add(-10 * time.Minute)) // the first backup starts writing
	e := &env{cs: memstore.New(), spool: t.TempDir(), now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }}
	e.open(t)
	st := e.staging(t, "v")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, one chunk
	for i := 0; i < 3; i++ {
		a, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	set(t0)
	r1, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	// 3 identical files dedup to one chunk; root + 3 files + d = 5 inodes.
	if r1.Size != 3<<20 || r1.Files != 5 || r1.Added < 1<<20 || r1.Added > 1<<20+4096 || r1.Duration != 10*time.Minute {
		t.Errorf("rev 1: size %d files %d added %d duration %v", r1.Size, r1.Files, r1.Added, r1.Duration)
	}
	// Duration runs from the first change after the previous commit to
	// the end of this one: not the gap between revision times, which for
	// an import (--time) is its age and for daily backups a day.
	set(t0.Add(50 * time.Minute))
	if err := st.Unlink(ctx, layers.RootIno, "f0"); err != nil {
		t.Fatal(err)
	}
	set(t0.Add(time.Hour))
	r2, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Time: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Size != 2<<20 || r2.Files != 4 || r2.Added > 4096 || r2.Duration != 10*time.Minute {
		t.Errorf("rev 2: size %d files %d added %d duration %v", r2.Size, r2.Files, r2.Added, r2.Duration)
	}
	set(t0.Add(2 * time.Hour)) // nothing changed: the commit's own time, 0 on this clock
	if r3, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil || r3.Duration != 0 {
		t.Errorf("rev 3 (no change): duration %v, %v; want 0", r3.Duration, err)
	}
	set(t0.Add(3 * time.Hour))
	if _, err := st.Mkdir(ctx, layers.RootIno, "imported", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	set(t0.Add(3*time.Hour + 5*time.Minute))
	if r4, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Time: t0.AddDate(-1, 0, 0)}); err != nil || r4.Duration != 5*time.Minute {
		t.Errorf("rev 4 (an import dated a year back): duration %v, %v; want 5m", r4.Duration, err)
	}
}

// Duration and Added count from the first change to staging even when the
// server restarted between the backup and the commit (they counted from
// the restart).
func TestCommitDurationAcrossRestart(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	set := func(t time.Time) { clock.Store(t.UnixNano()) }
	set(t0.Add(-time.Hour))
	e := &env{cs: memstore.New(), spool: t.TempDir(), dir: t.TempDir(), now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }}
	e.open(t)
	st := e.staging(t, "v")
	a, err := st.Create(ctx, layers.RootIno, "f", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("restart "), 1<<17) // 1 MiB
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	set(t0.Add(-30 * time.Minute))
	e.reopen(t)
	set(t0)
	r1, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil || r1.Duration != time.Hour || r1.Added < 1<<20 {
		t.Fatalf("commit after a restart: duration %v, added %d, %v; want 1h and the 1 MiB written before", r1.Duration, r1.Added, err)
	}
	// The commit forgets it: the next one after another restart counts
	// from its own first change.
	e.reopen(t)
	set(t0.Add(2 * time.Hour))
	if r2, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil || r2.Duration != 0 {
		t.Fatalf("commit with no change after a restart: duration %v, %v; want 0", r2.Duration, err)
	}
}

func TestCommitWhileWriting(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "v")
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i%250 + 1)}, 1000+i) }
	var done atomic.Int64 // files whose create and write have returned
	done.Store(-1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a, err := st.Create(ctx, layers.RootIno, fmt.Sprintf("f%05d", i), 0o644, 0, 0, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := st.WriteAt(ctx, a.Ino, payload(i), 0); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				_ = st.FlushFile(ctx, a.Ino, false)
			}
			done.Store(int64(i))
		}
	}()
	type snap struct {
		id     string
		before int64
	}
	var snaps []snap
	for k := 0; k < 5; k++ {
		time.Sleep(20 * time.Millisecond)
		before := done.Load()
		rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, snap{rev.ID, before})
	}
	close(stop)
	wg.Wait()
	for _, s := range snaps {
		tr, err := e.repo.Snapshot(ctx, "v", s.id)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		err = tr.ReadDir(ctx, layers.RootIno, "", func(d layers.Dirent) bool {
			var i int
			fmt.Sscanf(d.Name, "f%05d", &i)
			a, err := tr.GetAttr(ctx, d.Ino)
			if err != nil {
				t.Error(err)
				return false
			}
			want := payload(i)
			// A write is all in or all out: the file was created before
			// the commit, its write may have come after.
			if a.Size != 0 {
				buf := make([]byte, a.Size)
				if _, err := tr.ReadAt(ctx, d.Ino, buf, 0); err != nil || !bytes.Equal(buf, want) {
					t.Errorf("revision %s: %s holds a torn write (%d bytes, %v)", s.id, d.Name, a.Size, err)
				}
			} else if int64(i) <= s.before {
				t.Errorf("revision %s: %s written before the commit is empty", s.id, d.Name)
			}
			n++
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if int64(n) < s.before+1 {
			t.Errorf("revision %s: %d files, but %d were written before the commit", s.id, n, s.before+1)
		}
	}
}

var agePattern = regexp.MustCompile(`^([0-9]+[smhdwy])+$`)

func TestResolve(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	e.staging(t, "v")
	if _, err := e.repo.Resolve(ctx, "v", "latest", time.Now()); !errors.Is(err, layers.ErrNoRevisions) {
		t.Fatalf("no revisions: %v", err)
	}
	if _, err := e.repo.Resolve(ctx, "nope", "latest", time.Now()); !errors.Is(err, layers.ErrUnknownVolume) {
		t.Fatalf("unknown volume: %v", err)
	}
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tags := [][]string{{"daily"}, {"daily", "weekly"}, {"daily"}, {"weekly"}, {"daily"}}
	// revs[i] is day i. Day 2 is committed last, as an import of an older
	// backup (commit --time) would be: specs count by time, not by commit
	// order, so they agree with list.
	revs := make([]layers.Revision, len(tags))
	for _, i := range []int{0, 1, 3, 4, 2} {
		rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{Time: base.Add(time.Duration(i) * 24 * time.Hour), Tags: tags[i]})
		if err != nil {
			t.Fatal(err)
		}
		revs[i] = rev
	}
	now := base.Add(4*24*time.Hour + time.Hour) // an hour after the last
	// Two revisions sharing an id prefix cannot be forced with random ids;
	// find the shortest prefix of rev 0 that is unique, and one that is not.
	uniq := revs[0].ID
	for l := 1; l <= len(uniq); l++ {
		n := 0
		for _, r := range revs {
			if strings.HasPrefix(r.ID, revs[0].ID[:l]) {
				n++
			}
		}
		// An all-digit prefix reads as "N before the latest", one like
		// "2d" as an age.
		if p := revs[0].ID[:l]; n == 1 && strings.Trim(p, "0123456789") != "" && !agePattern.MatchString(p) {
			uniq = revs[0].ID[:l]
			break
		}
	}
	tests := []struct {
		spec string
		want int // index into revs; -1 = *SpecError
	}{
		{"latest", 4}, {"last", 4}, {"", 4},
		{"0", 4}, {"1", 3}, {"~1", 3}, {"~4", 0}, {"5", -1}, {"~9", -1},
		{"daily", 4}, {"daily~1", 2}, {"daily~3", 0}, {"daily~4", -1},
		{"weekly", 3}, {"weekly~1", 1},
		{revs[2].ID, 2}, {uniq, 0}, {"zzz", -1},
		{"2025-03-03", 2}, {"2025-02-28", -1},
		{"2025-03-02T12:00:00Z", 1}, {"2025-03-02T11:59:59Z", 0}, {"2025-03-02T13:00:00+01:00", 1},
		{"2025-03-02 12:00:00", 1}, {"2025-03-02 11:59", 0}, {"2025-03-02T12:00", 1}, {"2025-03-02 11:59:59.5", 0},
		{"1h", 4}, {"2h", 3}, {"1d", 3}, {"1d1h", 3}, {"1d2h", 2}, {"36h", 2}, {"2w", -1},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := e.repo.Resolve(ctx, "v", tt.spec, now)
			if tt.want < 0 {
				var se *layers.SpecError
				if !errors.As(err, &se) {
					t.Fatalf("got %v, %v; want a SpecError", got.ID, err)
				}
				return
			}
			if err != nil || got.ID != revs[tt.want].ID {
				t.Fatalf("got %s, %v; want revision %d (%s)", got.ID, err, tt.want, revs[tt.want].ID)
			}
		})
	}
}
