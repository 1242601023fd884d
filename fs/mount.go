package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// Options configure a mount. The zero value is usable.
type Options struct {
	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil means time.Now; used for utimens(UTIME_NOW) and synthetic times
	// Repo supplies statfs figures (Repo.StatFS). Nil reports a large
	// unknown capacity so writers do not refuse to start.
	Repo *layers.Repo
	// AllowOther lets users other than the mounting one use the mount
	// (permissions are still checked by the kernel: default_permissions).
	AllowOther bool
	// Debug logs every FUSE request through Logger at debug level.
	Debug bool
	// NoWarm turns off listing staging directories ahead of lookups
	// (warm.go), for comparing with it.
	NoWarm bool
	// ReadDirDelay holds every READDIRPLUS reply this long: fault
	// injection for tests of a server killed while the staging warmer
	// waits on its own mount.
	ReadDirDelay time.Duration
	// Source is the mount's source in the mount table (fsname, what df
	// shows): what lets a later process tell its own mounts, dead ones
	// included, from other strata mounts (Table). "" means "strata".
	Source string
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// ErrMountpoint is returned when the mountpoint is missing, not a directory
// or not empty.
var ErrMountpoint = errors.New("unusable mountpoint")

// ErrBusy is returned by Unmount when something holds the mount, as
// umount(8) would find it: open files, a process's working directory, a
// loop device backed by a file in it, a mount on top of it. Holders says
// which, where it can tell.
var ErrBusy = errors.New("mount is busy")

// Mount is a mounted filesystem served by this process.
type Mount struct {
	dir   string
	srv   *fuse.Server
	flush func(context.Context) error // makes writes durable; nil for read-only mounts
	stop  func()                      // ends the server's own use of the mount; may be nil
	// writers lists the inodes with a handle open for writing; nil
	// for mounts that hand out no writable handles.
	writers func() []layers.Ino
	// inUse lists the revisions the mount reads from now; nil for
	// mounts of one revision or of staging.
	inUse  func() []RevisionRef
	logger *slog.Logger

	done chan struct{} // closed when serving ended and the final flush ran
	dev  devNum        // device number from the mount table (zero: unknown)

	mu       sync.Mutex // guards flushErr
	flushErr error
}

// Dir is the mountpoint.
func (m *Mount) Dir() string { return m.dir }

// RevisionRef names a revision of a volume.
type RevisionRef struct{ Volume, ID string }

// RevisionsInUse lists the revisions a browse mount (MountBrowse) read
// from lately; nil for other mounts, whose revision is fixed.
func (m *Mount) RevisionsInUse() []RevisionRef {
	if m.inUse == nil {
		return nil
	}
	return m.inUse()
}

// OpenForWriting returns the inodes that have a file handle open for
// writing now, in inode order, each once: a copy into staging still
// running (rsync's temporary file, say), or a process that keeps a file
// open. Nil on read-only mounts and block volumes' disk mounts (which
// keep no handles). Safe for concurrent use; it touches only the
// server's handle table, never the mount.
func (m *Mount) OpenForWriting() []layers.Ino {
	if m.writers == nil {
		return nil
	}
	return m.writers()
}

// Unmount makes every write durable (Staging.Sync or Disk.Flush), unmounts
// and waits for serving to end. While something holds the mount it fails
// with ErrBusy and the mount keeps serving.
func (m *Mount) Unmount() error {
	select {
	case <-m.done: // already unmounted from outside (umount(8))
		return m.Err()
	default:
	}
	if m.flush != nil {
		if err := m.flush(context.Background()); err != nil {
			return fmt.Errorf("flush before unmount of %s: %w", m.dir, err)
		}
	}
	if m.stop != nil {
		m.stop() // its open directories would make the unmount fail
	}
	if err := m.unmount(); err != nil {
		return err
	}
	<-m.done
	return m.Err()
}

// unmount asks the kernel to unmount, which ends serving. umount(2)
// itself, not go-fuse's Server.Unmount: that falls back to fusermount on
// EBUSY, whose message ("Device or resource busy", a newline, "(code exit
// status 1)") is all that is left of why. A few tries, as go-fuse makes:
// the kernel may still count a file closed a moment ago.
func (m *Mount) unmount() error {
	var err error
	for try, delay := 0, 5*time.Millisecond; try < 5; try, delay = try+1, 2*delay {
		if err = syscall.Unmount(m.dir, 0); err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(delay)
	}
	switch {
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("unmount %s: %w", m.dir, ErrBusy)
	case errors.Is(err, syscall.EPERM):
		// Mounted through fusermount by a user without CAP_SYS_ADMIN.
		if err := m.srv.Unmount(); err != nil {
			return fmt.Errorf("unmount %s: %s", m.dir, strings.TrimSpace(err.Error()))
		}
		return nil
	}
	return fmt.Errorf("unmount %s: %w", m.dir, err)
}

// Busy reports whether something holds the mount, so that Unmount would
// fail with ErrBusy, without unmounting: a first umount2(MNT_EXPIRE) fails
// with EBUSY on a busy mount and with EAGAIN on an idle one, which it
// marks expired; the stat after it clears the mark (any access does), so
// a second probe is a probe again, not an unmount. What the mount's own
// warmer holds counts too (Unmount stops it first): callers leave out
// what Holders names of their own process.
func (m *Mount) Busy() (bool, error) {
	select {
	case <-m.done:
		return false, nil
	default:
	}
	err := syscall.Unmount(m.dir, syscall.MNT_EXPIRE)
	switch {
	case errors.Is(err, syscall.EBUSY):
		return true, nil
	case errors.Is(err, syscall.EAGAIN):
		_, _ = os.Stat(m.dir)
		return false, nil
	case err == nil:
		// Expired by someone else's probe and now unmounted, as by
		// umount(8): serving ends and flushes.
		return false, nil
	}
	return false, fmt.Errorf("probe whether %s is busy: %w", m.dir, err)
}

// Abandon ends the mount without the flush Unmount insists on: for a
// shutdown after that flush failed (a full or dead disk), since a server
// that must exit cannot keep the mount. What was not flushed is lost;
// staging comes back at its last durable point. The mount is detached
// and its connection aborted, so no process holding a file in it keeps
// it (or the shutdown) waiting.
func (m *Mount) Abandon() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if m.stop != nil {
		m.stop()
	}
	var errs []error
	if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
		errs = append(errs, fmt.Errorf("detach %s: %w", m.dir, err))
	}
	if err := AbortConn(m.Conn()); err != nil {
		errs = append(errs, fmt.Errorf("abort the connection of %s: %w", m.dir, err))
	}
	if len(errs) == 2 {
		return errors.Join(errs...) // neither worked: serving may not end
	}
	<-m.done
	return nil
}

// Wait blocks until the filesystem is unmounted (by Unmount or by a plain
// umount(8)) and the final flush has run.
func (m *Mount) Wait() { <-m.done }

// Err reports the error of the flush that ran when serving ended.
func (m *Mount) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushErr
}

// mountParams are what the Mount* functions choose per filesystem kind.
type mountParams struct {
	readOnly bool
	acl      bool // the filesystem stores ACL xattrs (fs volumes)
	name     string
	flush    func(context.Context) error
	// stop ends what the server itself does through the mount (the
	// staging warmer), before unmounting and once serving ended.
	stop func()
	// writers lists the inodes open for writing (nil: none can be).
	writers func() []layers.Ino
	// linksMove: a symlink's target may change under the same inode
	// (the browse mount's VOLUME/latest and tags/* follow commits).
	linksMove bool
}

func mount(ctx context.Context, dir string, raw fuse.RawFileSystem, opts Options, p mountParams) (*Mount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := prepareMountpoint(dir, opts.Logger); err != nil {
		return nil, err
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	// Permission checks in the kernel (default_permissions, and ACLs with
	// them) matter when other users can enter the mount. A staging mount
	// only its owner can enter goes without: the kernel forgets a
	// directory's attributes on every create, rename and unlink in it,
	// and the check on the next path walk costs a GETATTR round trip,
	// two for every file rsync writes. The ACL xattrs then pass through
	// to us as plain xattrs, and acl.go keeps mode and ACL in step.
	kernelChecks := opts.AllowOther || p.readOnly
	var mopts []string
	if kernelChecks {
		mopts = append(mopts, "default_permissions")
	}
	if p.readOnly {
		// The kernel then refuses every write with EROFS before it
		// reaches us; the handlers refuse too, as a second line.
		flags |= syscall.MS_RDONLY
		mopts = append(mopts, "ro")
	}
	source := opts.Source
	if source == "" {
		source = "strata"
	}
	mo := &fuse.MountOptions{
		AllowOther:       opts.AllowOther,
		Options:          mopts,
		FsName:           source,
		Name:             "strata",
		DirectMount:      true,
		DirectMountFlags: flags,
		// 1 MiB requests: the kernel here accepts max_pages 256
		// (machine-notes.md), and fewer round trips is what makes a
		// transforming filesystem fast.
		MaxWrite:     1 << 20,
		MaxReadAhead: 1 << 20,
		// 64 background requests keep readahead and async writes in
		// flight on a 2-core box without starving synchronous ops.
		MaxBackground: 64,
		// POSIX ACLs: the kernel enforces them; see acl.go. (The kernel
		// turns on default_permissions with them.)
		EnableAcl: p.acl && kernelChecks,
		// A symlink's target never changes (layers has no operation
		// for it), so the kernel may keep it: rsync reads every
		// destination symlink it compares. Not where targets move: the
		// kernel keeps a cached target until the inode is evicted, and
		// only a size change of a regular file invalidates it; a link
		// whose target changes to one of the same length (latest, from
		// one revision directory to the next) read stale for good.
		EnableSymlinkCaching: !p.linksMove,
		// Our READ replies are bytes, never a file descriptor to splice
		// from. go-fuse v2.12.1 still tries to splice each one: it
		// writes the header into a pipe, finds no descriptor, drains the
		// pipe and only then writes the reply; 19% of the server's CPU
		// in a cold read of a revision.
		DisableSplice: true,
		Debug:         opts.Debug,
		Logger:        log.New(io.Discard, "", 0),
	}
	if !p.readOnly {
		// Writable handles are opened FOPEN_DIRECT_IO (treeFS.Create and
		// Open); this keeps mmap(MAP_SHARED) working on them.
		mo.ExtraCapabilities |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	if p.acl && !p.readOnly {
		// The kernel then leaves the umask to us, so a default ACL can
		// replace it as POSIX says (treeFS.inherit).
		mo.ExtraCapabilities |= fuse.CAP_DONT_MASK
	}

	if opts.Debug {
		mo.Logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	}
	srv, err := fuse.NewServer(raw, dir, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s at %s: %w", p.name, dir, err)
	}
	m := &Mount{dir: dir, srv: srv, flush: p.flush, stop: p.stop, writers: p.writers, logger: opts.Logger, done: make(chan struct{})}
	go m.serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		<-m.done
		return nil, fmt.Errorf("mount %s at %s: %w", p.name, dir, err)
	}
	if dev, err := mountedDev(dir); err != nil {
		opts.Logger.Debug("fuse: mount not in the mount table", "dir", dir, "err", err)
	} else {
		m.dev = dev
		raiseReadahead(dev, opts.Logger)
	}
	return m, nil
}

// Conn is the mount's FUSE connection number, its directory under
// /sys/fs/fuse/connections (0 if unknown): what AbortConn takes.
func (m *Mount) Conn() uint32 { return m.dev.conn() }

// readaheadKB is the readahead we ask the kernel for on our mounts: 1 MiB,
// one full-size READ request, instead of the 128 KiB FUSE INIT can
// negotiate, so sequential reads of large files take 8x fewer round trips.
const readaheadKB = 1024

// raiseReadahead sets the readahead of the mount's backing device dev
// through sysfs (FUSE INIT caps it at the kernel's 128 KiB default). Best
// effort: a failure only costs speed.
func raiseReadahead(dev devNum, logger *slog.Logger) {
	p := dev.readaheadPath()
	if err := os.WriteFile(p, []byte(strconv.Itoa(readaheadKB)), 0o644); err != nil {
		logger.Debug("fuse: readahead", "path", p, "err", err)
	}
}

// serve runs the FUSE loop; when it ends (Unmount or an external umount)
// it flushes, so a plain umount(8) also leaves staging durable.
func (m *Mount) serve() {
	defer close(m.done)
	m.srv.Serve()
	if m.stop != nil {
		m.stop()
	}
	if m.flush == nil {
		return
	}
	if err := m.flush(context.Background()); err != nil {
		m.logger.Error("fuse: flush after unmount", "dir", m.dir, "err", err)
		m.mu.Lock()
		m.flushErr = fmt.Errorf("flush after unmount of %s: %w", m.dir, err)
		m.mu.Unlock()
	}
}

// prepareMountpoint clears a stale mount left by a killed server and
// refuses a missing, non-directory or non-empty mountpoint.
func prepareMountpoint(dir string, logger *slog.Logger) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, syscall.ENOTCONN) {
		// "Transport endpoint is not connected": a FUSE server died with
		// its mount still in place. A lazy unmount detaches it even if
		// some process still has a file open there.
		logger.Warn("fuse: clearing stale mount", "dir", dir)
		if uerr := syscall.Unmount(dir, syscall.MNT_DETACH); uerr != nil {
			return fmt.Errorf("clear stale mount at %s: %w", dir, uerr)
		}
		fi, err = os.Stat(dir)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mountpoint %s does not exist: %w", dir, ErrMountpoint)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory: %w", dir, ErrMountpoint)
	}
	if mounted, err := isMountpoint(dir); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("mountpoint %s is already a mount point: %w", dir, ErrMountpoint)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty: %w", dir, ErrMountpoint)
	}
	return nil
}

// isMountpoint reports whether dir is the mount point of a mounted
// filesystem (an empty live mount would otherwise pass the emptiness
// check and be stacked over).
func isMountpoint(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	_, ok, err := mountDev(abs)
	return ok, err
}

// ConnAt returns the FUSE connection number of the mount at dir (what
// AbortConn takes), from the mount table alone: the mount itself is not
// touched, since its server may be gone and any access would wait on it.
func ConnAt(dir string) (uint32, error) {
	dev, err := mountedDev(dir)
	return dev.conn(), err
}

// mountedDev is the device number of the mount at dir, found as ConnAt
// finds it.
func mountedDev(dir string) (devNum, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return devNum{}, err
	}
	if parent, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(parent, filepath.Base(abs))
	}
	dev, ok, err := mountDev(abs)
	if err == nil && !ok {
		err = fmt.Errorf("%s is not a mount point: %w", dir, ErrMountpoint)
	}
	return dev, err
}

// devNum is a mount's device number.
type devNum struct{ major, minor uint32 }

// conn is the FUSE connection number: fusectl names a connection by the
// kernel's dev_t, major<<20 | minor.
func (d devNum) conn() uint32 { return d.major<<20 | d.minor }

// readaheadPath is the sysfs file of the readahead of the mount's
// backing device.
func (d devNum) readaheadPath() string {
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", d.major, d.minor)
}

// mountDev looks the absolute, resolved path abs up in the mount table;
// ok is false if nothing is mounted there. Of mounts stacked on abs the
// top one counts.
func mountDev(abs string) (dev devNum, ok bool, err error) {
	mounts, err := readMountTable()
	if err != nil {
		return devNum{}, false, err
	}
	// The last of the mounts stacked on abs is on top.
	for _, m := range mounts {
		if m.point == abs && m.hasDev {
			dev, ok = m.dev, true
		}
	}
	return dev, ok, nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
