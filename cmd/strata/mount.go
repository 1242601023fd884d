package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/strata-backup/strata/fs"
	"github.com/strata-backup/strata/layers"
)

type mountCmd struct {
	Target     string `arg:"" optional:"" help:"NAME (staging, read-write) or NAME@REV (a revision, read-only)."`
	Mountpoint string `arg:"" optional:"" type:"path" help:"An existing empty directory."`
	All        bool   `help:"Mount every volume and revision read-only: VOLUME/<time>_<id>/, VOLUME/tags/<tag>/, VOLUME/latest."`
	AllowOther bool   `help:"Let other users into a file-tree staging mount, with permissions and ACLs checked by the kernel. Without it only the user the server runs as can enter, which saves two round trips per file written. Revision mounts always let other users in."`
}

type mountArgs struct {
	Target     string `json:"target,omitempty"`
	Mountpoint string `json:"mountpoint"`
	All        bool   `json:"all,omitempty"`
	AllowOther bool   `json:"allow_other,omitempty"`
}

// mountInfo describes one mount for status and for the mount command's answer.
type mountInfo struct {
	Mountpoint string    `json:"mountpoint"`
	Target     string    `json:"target"`
	Revision   string    `json:"revision,omitempty"`
	ReadOnly   bool      `json:"read_only"`
	Since      time.Time `json:"since"`
}

type mountEntry struct {
	mountInfo
	volume string
	m      *fs.Mount
	// flush makes staging durable after an unmount done with plain umount(8).
	flush func(context.Context) error
	close func() error
}

func (e *mountEntry) unmount() error {
	return e.m.Unmount()
}

func (c *mountCmd) Run(ctx context.Context, g *Globals) error {
	a := mountArgs{Target: c.Target, Mountpoint: c.Mountpoint, All: c.All, AllowOther: c.AllowOther}
	if c.All {
		if c.Mountpoint != "" {
			return fail(exitUsage, "", "with --all give only the mountpoint: strata mount --all MNT")
		}
		a.Target, a.Mountpoint = "", c.Target
	}
	if a.Mountpoint == "" {
		return fail(exitUsage, "strata mount NAME[@REV] MNT, or strata mount --all MNT", "missing mountpoint")
	}
	abs, err := filepath.Abs(a.Mountpoint)
	if err != nil {
		return err
	}
	a.Mountpoint = abs
	if err := checkMountpoint(abs); err != nil {
		return err
	}
	var info mountInfo
	if err := call(ctx, g, "mount", a, &info); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(info)
	}
	mode := "read-write"
	if info.ReadOnly {
		mode = "read-only"
	}
	what := info.Target
	if info.Revision != "" {
		what += "@" + info.Revision[:min(8, len(info.Revision))]
	}
	fmt.Printf("mounted %s at %s (%s); 'strata umount %s' when done\n", what, info.Mountpoint, mode, info.Mountpoint)
	return nil
}

// deadMount: the error of an access to a FUSE mount whose server is gone
// (ENOTCONN), or whose connection was aborted (ECONNABORTED: the guard of
// a server killed mid-request does that).
func deadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// checkMountpoint refuses a missing or non-empty mountpoint before anything
// starts. A stale strata mount (its server died) is cleared.
func checkMountpoint(dir string) error {
	var st syscall.Stat_t
	err := syscall.Stat(dir, &st)
	if deadMount(err) {
		syscall.Unmount(dir, syscall.MNT_DETACH)
		err = syscall.Stat(dir, &st)
	}
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return fail(exitUsage, "create it with 'mkdir -p "+dir+"'", "mountpoint %s does not exist", dir)
		}
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fail(exitUsage, "", "mountpoint %s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if deadMount(err) {
		// stat may still answer from the kernel's attribute cache.
		syscall.Unmount(dir, syscall.MNT_DETACH)
		ents, err = os.ReadDir(dir)
	}
	if err != nil {
		return fmt.Errorf("read mountpoint %s: %w", dir, bareErr(err))
	}
	if len(ents) > 0 {
		if abs, aerr := filepath.Abs(dir); aerr == nil {
			if t, _, _ := fs.TableType(abs); t == "fuse.strata" {
				return fail(exitUsage, "'strata status' lists what is mounted where; 'strata umount "+dir+"' first to mount something else there",
					"%s is already a strata mount", dir)
			}
		}
		return fail(exitUsage, "mount on an empty directory so nothing is hidden", "mountpoint %s is not empty", dir)
	}
	return nil
}

func opMount(ctx context.Context, env *opEnv, a mountArgs) (any, error) {
	s := env.srv
	if err := s.refuseIfStopping(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, busy := s.mounts[a.Mountpoint]
	s.mu.Unlock()
	if busy {
		return nil, fail(exitError, "", "%s is already a strata mount", a.Mountpoint)
	}
	if vol, rev, _ := splitTarget(a.Target); !a.All && rev == "" {
		// Held from this check until addMount records the mount, so two
		// mounts of one staging cannot both pass it.
		release, err := s.reserveStaging(vol, a.Mountpoint)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	if err := checkMountpoint(a.Mountpoint); err != nil {
		return nil, err
	}
	lr := env.repo.layers
	opts := fs.Options{Logger: s.log, Repo: lr, AllowOther: true, Source: mountSource(env.repo.dir)}
	e := &mountEntry{mountInfo: mountInfo{Mountpoint: a.Mountpoint, Target: a.Target, ReadOnly: true, Since: now()}}
	if a.All {
		var err error
		e.Target = "--all"
		e.m, err = fs.MountBrowse(ctx, a.Mountpoint, lr, opts)
		if err != nil {
			return nil, fmt.Errorf("mount all revisions: %w", err)
		}
		return s.addMount(e), nil
	}
	vol, rev, _ := splitTarget(a.Target)
	e.volume, e.Target = vol, vol
	info, err := lr.Volume(ctx, vol)
	if err != nil {
		return nil, volumeErr(err, vol)
	}
	switch {
	case info.Type == layers.TypeFS && rev == "":
		st, err := lr.Staging(ctx, vol)
		if err != nil {
			return nil, volumeErr(err, vol)
		}
		e.ReadOnly = false
		e.flush = st.Sync
		sopts := opts
		sopts.AllowOther = a.AllowOther
		if d, err := time.ParseDuration(os.Getenv("STRATA_TEST_READDIR_DELAY")); err == nil {
			sopts.ReadDirDelay = d // fault injection for tests/crash_test.go
		}
		e.m, err = fs.MountStaging(ctx, a.Mountpoint, st, sopts)
		if err != nil {
			return nil, fmt.Errorf("mount staging of %s: %w", vol, err)
		}
	case info.Type == layers.TypeFS:
		r, err := resolve(ctx, lr, vol, rev)
		if err != nil {
			return nil, err
		}
		t, err := lr.Snapshot(ctx, vol, r.ID)
		if err != nil {
			return nil, volumeErr(err, vol)
		}
		e.Revision = r.ID
		e.m, err = fs.MountTree(ctx, a.Mountpoint, t, opts)
		if err != nil {
			return nil, fmt.Errorf("mount %s@%s: %w", vol, r.ID, err)
		}
	case rev == "":
		d, err := lr.StagingDisk(ctx, vol)
		if err != nil {
			return nil, volumeErr(err, vol)
		}
		e.ReadOnly = false
		e.flush = d.Flush
		dopts := opts
		dopts.AllowOther = a.AllowOther // staging is owner-only, as for file trees
		e.m, err = fs.MountDisk(ctx, a.Mountpoint, d, dopts)
		if err != nil {
			return nil, fmt.Errorf("mount staging disk of %s: %w", vol, err)
		}
	default:
		r, err := resolve(ctx, lr, vol, rev)
		if err != nil {
			return nil, err
		}
		d, err := lr.RevisionDisk(ctx, vol, r.ID)
		if err != nil {
			return nil, volumeErr(err, vol)
		}
		e.Revision = r.ID
		e.close = d.Close
		e.m, err = fs.MountDisk(ctx, a.Mountpoint, d, opts)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("mount %s@%s: %w", vol, r.ID, err)
		}
	}
	return s.addMount(e), nil
}

// reserveStaging claims vol's staging for a mount at mp until release is
// called (after addMount recorded the mount, or on failure); it fails if
// the staging is mounted or being mounted elsewhere.
func (s *server) reserveStaging(vol, mp string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	other := s.stagingMount(vol)
	if other == "" {
		other = s.mounting[vol]
	}
	if other != "" {
		return nil, fail(exitError, "use that mount, or 'strata umount "+other+"' first",
			"staging of %s is already mounted at %s", vol, other)
	}
	s.mounting[vol] = mp
	return func() {
		s.mu.Lock()
		delete(s.mounting, vol)
		s.mu.Unlock()
	}, nil
}

// addMount records a live mount and watches for its end, however it ends
// (strata umount, plain umount, server shutdown).
func (s *server) addMount(e *mountEntry) mountInfo {
	s.mu.Lock()
	s.mounts[e.Mountpoint] = e
	s.mu.Unlock()
	s.guard.add(e.m.Conn())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		e.m.Wait()
		s.guard.remove(e.m.Conn())
		if e.flush != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			if err := e.flush(ctx); err != nil {
				s.log.Error("flush after unmount", "mountpoint", e.Mountpoint, "err", err)
			}
			cancel()
		}
		if e.close != nil {
			e.close()
		}
		s.mu.Lock()
		delete(s.mounts, e.Mountpoint)
		s.mu.Unlock()
		s.log.Info("unmounted", "mountpoint", e.Mountpoint)
		s.maybeExit()
	}()
	return e.mountInfo
}

// volumeUse says where volume vol of type typ is mounted or exported (""
// if nowhere), in words for an error message.
func (s *server) volumeUse(vol string, typ layers.VolumeType) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mounts {
		switch {
		case m.volume == vol:
			return "mounted at " + m.Mountpoint
		case m.Target == "--all":
			return "shown by the mount of every volume at " + m.Mountpoint
		}
	}
	for _, n := range s.nbds {
		if n.serves(vol, typ) {
			return "exported by the NBD server on " + n.Listen
		}
	}
	return ""
}

// stagingMount returns the mountpoint of vol's staging ("" if none is
// mounted); s.mu held. A second writable mount of one staging must be
// refused: each kernel mount caches entries and attributes for an hour on
// the promise that every change passes through it, so changes made
// through one would stay invisible to the other (a file removed through
// one still listed in the other, and creating it again failing).
func (s *server) stagingMount(vol string) string {
	for _, m := range s.mounts {
		if m.volume == vol && !m.ReadOnly {
			return m.Mountpoint
		}
	}
	return ""
}

// serves reports whether mp is the mountpoint of one of this server's
// live mounts.
func (s *server) serves(mp string) bool {
	_, ok := s.servedAt(mp)
	return ok
}

// servedAt returns the mount this server serves at mp, however spelled:
// the mount table and users name mount points with symlinks resolved or
// not, the server by the path it was mounted with.
func (s *server) servedAt(mp string) (*mountEntry, bool) {
	s.mu.Lock()
	if e, ok := s.mounts[mp]; ok {
		s.mu.Unlock()
		return e, true
	}
	mounts := make(map[string]*mountEntry, len(s.mounts))
	for p, e := range s.mounts {
		mounts[p] = e
	}
	s.mu.Unlock()
	want := resolveMountpoint(mp)
	for p, e := range mounts {
		if resolveMountpoint(p) == want {
			return e, true
		}
	}
	return nil, false
}

// stagingWriters returns the mountpoint of vol's file-tree staging and
// the inodes open for writing through it ("" and none when it is not
// mounted; a block volume's disk mount keeps no handles).
func (s *server) stagingWriters(vol string) (string, []layers.Ino) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mp := s.stagingMount(vol)
	if mp == "" {
		return "", nil
	}
	return mp, s.mounts[mp].m.OpenForWriting()
}

// mountList returns the live mounts sorted by mountpoint.
func (s *server) mountList() []mountInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]mountInfo, 0, len(s.mounts))
	for _, m := range s.mounts {
		out = append(out, m.mountInfo)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

type umountCmd struct {
	Mountpoint string `arg:"" type:"path" help:"The mountpoint to unmount."`
}

type umountArgs struct {
	Mountpoint string `json:"mountpoint"`
}

func (c *umountCmd) Run(ctx context.Context, g *Globals) error {
	abs, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return err
	}
	var res umountResult
	if err := call(ctx, g, "umount", umountArgs{abs}, &res); err != nil {
		return err
	}
	if res.Mountpoint == "" {
		res.Mountpoint = abs
	}
	switch {
	case g.JSON:
		return printJSON(res)
	case res.Detached:
		fmt.Printf("cleared dead mount %s (the server that served it had stopped); something still had it open, so it was detached: the kernel lets go of it once that closes\n", abs)
	case res.Dead:
		fmt.Printf("cleared dead mount %s (the server that served it had stopped)\n", abs)
	default:
		fmt.Printf("unmounted %s\n", abs)
	}
	if !res.Uncommitted.IsZero() {
		fmt.Printf("staging of %s has changes not yet committed (since %s): they are kept, but in no revision until 'strata commit %s'\n",
			res.Volume, res.Uncommitted.UTC().Format("2006-01-02 15:04:05 UTC"), res.Volume)
	}
	return nil
}

func opUmount(ctx context.Context, env *opEnv, a umountArgs) (any, error) {
	if env.srv == nil {
		return clearDeadMount(env.repo.dir, a.Mountpoint)
	}
	s := env.srv
	e, ok := s.servedAt(a.Mountpoint)
	if !ok {
		// Not served here: a mount an earlier server left when it was
		// killed is cleared; anything else is refused.
		return clearDeadMount(env.repo.dir, a.Mountpoint)
	}
	// The name it was mounted by, for the lookups below.
	a.Mountpoint = e.Mountpoint
	if err := e.unmount(); err != nil {
		if errors.Is(err, fs.ErrBusy) {
			b, _ := busyMountOf(a.Mountpoint, e.Target)
			return nil, fail(exitError, busyHint+", then unmount again", "not unmounted: %s", b)
		}
		return nil, err // it names the mountpoint
	}
	// Wait for the watcher to flush and forget it, so "unmounted" means done.
	for i := 0; i < 6000; i++ {
		s.mu.Lock()
		_, still := s.mounts[a.Mountpoint]
		s.mu.Unlock()
		if !still {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	res := umountResult{Mountpoint: a.Mountpoint}
	if e.Revision == "" && e.volume != "" {
		if info, err := env.repo.layers.Volume(ctx, e.volume); err == nil && !info.Uncommitted.IsZero() {
			res.Volume, res.Uncommitted = e.volume, info.Uncommitted
		}
	}
	return res, nil
}
