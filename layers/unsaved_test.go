package layers_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
)

// TestCrashWithUnsavedChanges: a crash that finds staging changes not yet
// durable makes Commit refuse, whatever the per-file markers show (the
// changes may be gone with their records), until staging is written again
// or the commit allows the loss; a crash after a durable point, or a clean
// close, refuses nothing.
func TestCrashWithUnsavedChanges(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// before writes staging and ends it (a durable point, a crash, a
		// close); after runs once the repository is open again.
		before, after func(e *crashEnv, st *layers.Staging)
		allowLost     bool
		wantLost      bool // commit refuses with lost changes
	}{
		{name: "crash with a change in memory", wantLost: true,
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "late")
				e.crashNow()
			}},
		{name: "crash with a change in the index, not synced", wantLost: true,
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "late")
				e.crash()
			}},
		{name: "crash after fsync",
			before: func(e *crashEnv, st *layers.Staging) {
				ino := writeFile(t, st, layers.RootIno, "f", seeded(1, 100), nil)
				if err := st.FlushFile(ctx, ino, true); err != nil {
					t.Fatal(err)
				}
				e.crashNow()
			}},
		{name: "crash after Sync",
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "d")
				if err := st.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				e.crashNow()
			}},
		{name: "clean close",
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "d")
				if err := e.repo.Close(); err != nil {
					t.Fatal(err)
				}
				e.stop()
				e.open()
			}},
		{name: "staging written again after the crash",
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "late")
				e.crashNow()
			},
			after: func(e *crashEnv, st *layers.Staging) { mkdir(t, st, "again") }},
		{name: "crash after fsync of one file while another buffers", wantLost: true,
			before: func(e *crashEnv, st *layers.Staging) {
				writeFile(t, st, layers.RootIno, "buffered", seeded(2, 100), nil)
				ino := writeFile(t, st, layers.RootIno, "synced", seeded(3, 100), nil)
				if err := st.FlushFile(ctx, ino, true); err != nil {
					t.Fatal(err)
				}
				e.crashNow()
			}},
		{name: "commit allowing the loss", allowLost: true, wantLost: true,
			before: func(e *crashEnv, st *layers.Staging) {
				mkdir(t, st, "late")
				e.crashNow()
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCrashEnv(t)
			st := e.newStaging("v")
			mkdir(t, st, "committed")
			if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
				t.Fatal(err)
			}
			tc.before(e, st)
			st = e.staging("v")
			if tc.after != nil {
				tc.after(e, st)
			}
			info, err := e.repo.Volume(ctx, "v")
			if err != nil {
				t.Fatal(err)
			}
			if got := !info.LostChanges.IsZero(); got != tc.wantLost {
				t.Errorf("volume info: lost changes since %v, want lost %v", info.LostChanges, tc.wantLost)
			}
			_, err = e.repo.Commit(ctx, "v", layers.CommitOptions{AllowLost: tc.allowLost})
			var lost *layers.LostDataError
			switch {
			case tc.allowLost:
				if err != nil {
					t.Fatalf("commit --allow-lost: %v", err)
				}
				e.crashNow()
				if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
					t.Fatalf("commit after an allowed loss and a crash with nothing unsaved: %v", err)
				}
			case tc.wantLost && (!errors.As(err, &lost) || lost.Changes.IsZero()):
				t.Fatalf("commit: %v, want a LostDataError naming lost changes", err)
			case !tc.wantLost && err != nil:
				t.Fatalf("commit: %v", err)
			}
		})
	}
}

// TestIdleSyncSavesStaging: a change nobody fsyncs is made durable once
// writes stop for IdleSync, so a crash after that loses nothing and
// refuses nothing.
func TestIdleSyncSavesStaging(t *testing.T) {
	ctx := context.Background()
	e := &crashEnv{t: t, dir: t.TempDir(), spool: t.TempDir(), cs: newCrashStore(), idleSync: 20 * time.Millisecond}
	e.open()
	st := e.newStaging("v")
	data := seeded(7, 50_000)
	writeFile(t, st, layers.RootIno, "f", data, nil)
	deadline := time.Now().Add(time.Minute)
	for {
		info, err := e.repo.Volume(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		if info.Unsaved.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging still unsaved since %v a minute after the last change", info.Unsaved)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.crashNow()
	st = e.staging("v")
	a, err := st.Tree().Lookup(ctx, layers.RootIno, "f")
	if err != nil {
		t.Fatalf("f after the idle sync and a crash: %v", err)
	}
	got := make([]byte, len(data)+1)
	n, err := st.Tree().ReadAt(ctx, a.Ino, got, 0)
	if err != nil && n != len(data) || string(got[:n]) != string(data) {
		t.Fatalf("f after the idle sync and a crash: %d bytes, err %v; want its %d bytes", n, err, len(data))
	}
	info, err := e.repo.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if !info.LostChanges.IsZero() || info.LostFiles != 0 {
		t.Errorf("after the idle sync and a crash: lost changes since %v, %d lost files; want none", info.LostChanges, info.LostFiles)
	}
}

func mkdir(t *testing.T, st *layers.Staging, name string) {
	t.Helper()
	if _, err := st.Mkdir(context.Background(), layers.RootIno, name, 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
}

// TestFlushDuringDurablePoint: a file's flush that puts its extent map in
// pending while a durable point (an fsync of another file) settles must
// leave staging marked unsaved: the map is not durable, and flushes do not
// mark (review: the file came back empty after a crash and commit passed).
func TestFlushDuringDurablePoint(t *testing.T) {
	ctx := context.Background()
	e := newCrashEnv(t)
	st := e.newStaging("v")
	mkdir(t, st, "committed")
	if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	f := writeFile(t, st, layers.RootIno, "f", seeded(1, 100_000), nil)
	g := writeFile(t, st, layers.RootIno, "g", seeded(2, 100), nil)
	once := false
	layers.SetAfterSync(e.repo, func() {
		if !once {
			once = true
			if err := layers.FlushNow(ctx, st, f); err != nil {
				t.Error(err)
			}
		}
	})
	if err := st.FlushFile(ctx, g, true); err != nil {
		t.Fatal(err)
	}
	e.crashNow()
	info, err := e.repo.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if info.LostChanges.IsZero() && info.LostFiles == 0 {
		t.Fatal("a flush landed during the fsync's durable point and a crash followed: nothing marks the loss")
	}
	if _, err := e.repo.Commit(ctx, "v", layers.CommitOptions{}); err == nil {
		t.Error("commit after that crash succeeded")
	}
}

// TestIdleSyncRetriesOnlyAfterChanges: a file still open keeps staging
// unsaved; the idle sync then waits for a new change (or MaxUnsaved)
// before it tries again, instead of syncing every tick.
func TestIdleSyncRetriesOnlyAfterChanges(t *testing.T) {
	ctx := context.Background()
	e := &crashEnv{t: t, dir: t.TempDir(), spool: t.TempDir(), cs: newCrashStore(), idleSync: 10 * time.Millisecond}
	e.open()
	st := e.newStaging("v")
	ino := writeFile(t, st, layers.RootIno, "open", seeded(3, 1000), nil)
	st.Hold(ino)
	var syncs atomic.Int64
	layers.SetAfterSync(e.repo, func() { syncs.Add(1) })
	time.Sleep(500 * time.Millisecond)
	if n := syncs.Load(); n < 1 || n > 3 {
		t.Errorf("%d background syncs in 0.5 s with one change and a file held open; want one (or two)", n)
	}
	if info, err := e.repo.Volume(ctx, "v"); err != nil || info.Unsaved.IsZero() {
		t.Errorf("staging with a file open for writing: unsaved since %v, %v; want still unsaved", info.Unsaved, err)
	}
}
