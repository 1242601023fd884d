package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// warmer fills the kernel's dentry and attribute cache of a staging mount
// ahead of a reader that walks it, rsync's generator above all.
//
// Why: staging entries and attributes may live in the kernel for an hour
// (stagingCache), but a fresh mount, or memory pressure since the last
// backup, leaves that cache empty, and rsync's no-change pass then waits
// for one LOOKUP round trip per file (lstat of the destination). rsync
// without --delete never lists destination directories, so nothing else
// would fill the cache in bulk. The warmer lists them itself, through the
// mount: each READDIRPLUS reply carries the entries and attributes of as
// many names as fit the 32 KiB getdents buffer, which the kernel turns
// into dentries as if each had been looked up; it also reads and stats
// the directory's symlinks (their targets are cached, see mount). The
// reader's lstat and readlink calls then stay in the kernel, as on a
// local filesystem.
//
// What starts it: a LOOKUP reaching us for a name in a directory the
// warmer has not listed (or made: MKDIR) since the kernel last forgot
// it. The warmer then lists that directory and, depth first in name
// order (rsync's order), the directories below it, while the process
// that sent the last LOOKUP runs and at most warmAhead entries past that
// LOOKUP, so an `ls` does not list a whole large tree into the kernel's
// memory, and a umount(8) right after the reader finished finds nothing
// open. A positive LOOKUP in a listed directory lists it again if the
// kernel forgot nodes since and rewarmAfter has passed (it dropped
// entries but kept the directory). Negative LOOKUPs (a new name, as in
// a first backup) never start work in a listed directory.
//
// A directory a LOOKUP named is opened by FUSE node id with
// open_by_handle_at(2) (the kernel's FUSE file handle is the node id and
// generation; the inode of a directory being looked up in is in the
// kernel's cache, so this costs no round trip); the directories below
// it by name from their parent. Without the privilege for handles
// (CAP_DAC_READ_SEARCH) the warmer turns itself off. Best effort
// throughout: an error only means a directory stays cold. A nil warmer
// (read-only mounts, Options.NoWarm) does nothing.
type warmer struct {
	dir    string // absolute mountpoint
	logger *slog.Logger
	now    func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // one token: work was queued

	mu sync.Mutex // guards the fields below
	// listed: node ids of directories listed, queued or made here,
	// and when; dropped when the kernel forgets the node.
	listed    map[uint64]listing
	forgets   uint64    // FORGETs so far
	stack     []warmJob // directories to list, next on top
	sinceMiss int       // entries listed since the last LOOKUP
	// readers are the last two pids that sent a LOOKUP (rsync looks up
	// from two processes), newest first; none of them is ours.
	readers [2]uint32
	off     bool // open_by_handle_at is not available

	// replySize is the largest READDIRPLUS reply size the kernel asked
	// for (it passes getdents' buffer size on): the warmer infers the
	// end of a directory from a reply that was not full (see list).
	replySize atomic.Uint32
}

// warmJob is a directory to list: a subdirectory found by listing its
// parent is opened by name from the parent's open descriptor; a
// directory a LOOKUP named has no parent here and is opened by handle.
// (Opening by handle makes the kernel look the directory's own name up
// again on the next path walk through it, one round trip we save where
// we can.)
type warmJob struct {
	node   uint64
	parent *dirRef // nil: open by handle
	name   string
}

// listing is when a directory was listed (queued or made).
type listing struct {
	at      time.Time
	forgets uint64 // warmer.forgets then
}

// dirRef is an open directory that queued jobs still need.
type dirRef struct {
	fd   int
	refs int // guarded by warmer.mu
}

const (
	// warmWorkers list directories in parallel: each listing is mostly
	// waiting for round trips, so a few overlap well even on 2 cores.
	warmWorkers = 4
	// warmAhead bounds how far the warmer runs ahead of the last LOOKUP.
	warmAhead = 1 << 16
	// rewarmAfter: a directory listed at least this long ago, with
	// FORGETs since, is listed again on a positive LOOKUP in it. The
	// kernel also looks up names it holds (the target of a rename, as
	// rsync replaces a changed file), so this bounds how often such
	// lookups list a directory while files are being deleted.
	rewarmAfter = time.Second
	// warmStackMax bounds the directories queued.
	warmStackMax = 1 << 16
)

// fuseHandleType is the kernel's FILEID_INO64_GEN: a FUSE file handle is
// the node id (high and low 32 bits) and the generation, as u32s.
const fuseHandleType = 0x81

// entryGeneration is the generation every entry reply carries
// (fillEntry), and so part of every handle the warmer opens.
const entryGeneration = 1

func newWarmer(dir string, logger *slog.Logger, now func() time.Time) *warmer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &warmer{
		dir: dir, logger: logger, now: now, ctx: ctx, cancel: cancel,
		wake:   make(chan struct{}, 1),
		listed: make(map[uint64]listing),
	}
	for range warmWorkers {
		w.wg.Add(1)
		go w.run()
	}
	return w
}

// lookup notes a LOOKUP by process pid of name in directory parent
// that found something or not.
func (w *warmer) lookup(parent uint64, name string, found bool, pid uint32) {
	if w == nil || name == "." || name == ".." {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.readerLocked(pid) {
		// The warmer's own lookups (a subdirectory the kernel dropped
		// meanwhile) start nothing, and a reader that is this process
		// would never exit.
		return
	}
	w.sinceMiss = 0
	if w.off {
		return
	}
	// A directory listed before is listed again only when the kernel
	// seems to have dropped entries: it found a name (the listing had
	// given it that), and forgot nodes since.
	l, ok := w.listed[parent]
	if ok && (!found || l.forgets == w.forgets || w.now().Sub(l.at) < rewarmAfter) {
		return
	}
	if w.pushLocked(warmJob{node: parent}) {
		w.signal()
	}
}

// made notes a directory created through the mount: the kernel saw
// every entry it will ever have arrive.
func (w *warmer) made(node uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.listed[node] = listing{w.now(), w.forgets}
}

// readDirPlus notes the size of a READDIRPLUS request.
func (w *warmer) readDirPlus(size uint32) {
	if w != nil && size > w.replySize.Load() {
		w.replySize.Store(size)
	}
}

// forget notes that the kernel dropped a node (FORGET).
func (w *warmer) forget(node uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.listed, node)
	w.forgets++
}

// stop ends the workers and waits for them; their open directories
// would keep the mount busy. Once stopped, a warmer stays stopped (an
// unmount that then fails on files the user holds open leaves the mount
// without it). A nil warmer does nothing.
func (w *warmer) stop() {
	if w == nil {
		return
	}
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range w.stack {
		w.releaseLocked(j.parent)
	}
	w.stack = nil
}

func (w *warmer) pushLocked(j warmJob) bool {
	if len(w.stack) >= warmStackMax {
		return false
	}
	w.listed[j.node] = listing{w.now(), w.forgets}
	w.stack = append(w.stack, j)
	if j.parent != nil {
		j.parent.refs++
	}
	return true
}

// readerLocked makes pid the newest reader, unless it is one of this
// process's threads (checked once while it stays among the last two).
func (w *warmer) readerLocked(pid uint32) bool {
	switch pid {
	case w.readers[0]:
	case w.readers[1]:
		w.readers[0], w.readers[1] = pid, w.readers[0]
	default:
		if ownThread(pid) {
			return false
		}
		w.readers[0], w.readers[1] = pid, w.readers[0]
	}
	return true
}

// ownThread reports whether pid (FUSE passes the thread's id) is a
// thread of this process.
func ownThread(pid uint32) bool {
	_, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(pid), 10))
	return err == nil
}

// readerAliveLocked reports whether the process that sent the last
// LOOKUP still runs.
func (w *warmer) readerAliveLocked() bool {
	if w.readers[0] == 0 {
		return false
	}
	return unix.Kill(int(w.readers[0]), 0) != unix.ESRCH
}

func (w *warmer) releaseLocked(d *dirRef) {
	if d == nil {
		return
	}
	if d.refs--; d.refs == 0 {
		unix.Close(d.fd)
	}
}

func (w *warmer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pop takes the next job. With wait false it returns at once when there
// is none; ok is false then, and once stopped.
func (w *warmer) pop(wait bool) (j warmJob, ok bool) {
	for {
		w.mu.Lock()
		if n := len(w.stack); n > 0 && !w.off && w.ctx.Err() == nil {
			j = w.stack[n-1]
			w.stack = w.stack[:n-1]
			w.mu.Unlock()
			if n > 1 {
				w.signal() // pass the token on to another worker
			}
			return j, true
		}
		w.mu.Unlock()
		if !wait {
			return j, false
		}
		select {
		case <-w.ctx.Done():
			return j, false
		case <-w.wake:
		}
	}
}

// run lists directories until stopped. While it has work it keeps the
// mount's root open as the anchor for open_by_handle_at; idle, it holds
// nothing open, so umount(8) finds the mount free.
func (w *warmer) run() {
	defer w.wg.Done()
	buf := make([]byte, 32<<10)
	var a *anchor
	for {
		j, ok := w.pop(false)
		if !ok {
			if a != nil {
				a.close()
				a = nil
			}
			if j, ok = w.pop(true); !ok {
				return
			}
		}
		fd, err := w.open(&a, j)
		w.mu.Lock()
		w.releaseLocked(j.parent)
		w.mu.Unlock()
		var subdirs []warmJob
		var n int
		if err == nil {
			subdirs, n, err = w.list(fd, buf)
		}
		if err != nil {
			w.logger.Debug("fuse: warm", "node", j.node, "err", err)
		}
		w.mu.Lock()
		if errors.Is(err, syscall.EPERM) || errors.Is(err, errHandleFormat) {
			w.off = true
		}
		if err != nil {
			delete(w.listed, j.node)
		}
		w.sinceMiss += n
		alive := w.readerAliveLocked()
		if !alive {
			// Nobody left to read ahead of: drop the queue, and with it
			// the open directories that would make a umount(8) right
			// after the reader finished fail with EBUSY. What was
			// dropped was never listed.
			for _, j := range w.stack {
				w.releaseLocked(j.parent)
				delete(w.listed, j.node)
			}
			w.stack = w.stack[:0]
		}
		ref := &dirRef{fd: fd}
		if err == nil && w.sinceMiss < warmAhead && alive {
			// Reverse, so the first name is listed next: rsync's order.
			for i := len(subdirs) - 1; i >= 0; i-- {
				if _, seen := w.listed[subdirs[i].node]; !seen {
					subdirs[i].parent = ref
					w.pushLocked(subdirs[i])
				}
			}
		}
		if ref.refs == 0 && fd >= 0 {
			unix.Close(fd)
		}
		w.mu.Unlock()
	}
}

// open opens j's directory for reading.
func (w *warmer) open(a **anchor, j warmJob) (int, error) {
	if j.parent != nil {
		return unix.Openat(j.parent.fd, j.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if *a == nil {
		var err error
		if *a, err = w.openAnchor(); err != nil {
			return -1, err
		}
	}
	return (*a).open(j.node)
}

var errHandleFormat = errors.New("unexpected FUSE file handle format")

// list reads the open directory fd through the mount and returns its
// subdirectories and the number of entries.
func (w *warmer) list(fd int, buf []byte) (subdirs []warmJob, n int, err error) {
	var links []string
	for w.ctx.Err() == nil {
		got, err := unix.Getdents(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return subdirs, n, err
		}
		// plus adds up the READDIRPLUS reply the entries came in.
		plus := 0
		for b := buf[:got]; len(b) >= 19; {
			// struct linux_dirent64: ino u64, off s64, reclen u16,
			// type u8, name (NUL-terminated, padded).
			ino := binary.NativeEndian.Uint64(b)
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := cString(b[19:reclen])
			switch b[18] {
			case unix.DT_DIR:
				if name != "." && name != ".." {
					subdirs = append(subdirs, warmJob{node: ino, name: name})
				}
			case unix.DT_LNK:
				links = append(links, name)
			}
			plus += direntPlusSize(len(name))
			n++
			b = b[reclen:]
		}
		// treeFS.readDir fills a reply while the next entry fits, so a
		// reply with room for the longest name left was the last one:
		// no need for the empty reply that would say so.
		size := min(int(w.replySize.Load()), len(buf))
		if got == 0 || (size > 0 && plus+direntPlusSize(255) <= size) {
			// Listing made the kernel forget the directory's atime: a
			// stat now answers the reader's later lstat.
			var st unix.Stat_t
			_ = unix.Fstat(fd, &st)
			w.readLinks(fd, links, buf)
			return subdirs, n, nil
		}
	}
	return subdirs, n, w.ctx.Err()
}

// readLinks reads the targets of symlinks in directory fd, and then their
// attributes: the mount caches targets (CAP_CACHE_SYMLINKS), and rsync
// reads every destination symlink it compares. The stat is needed as
// reading a link makes the kernel forget its atime.
func (w *warmer) readLinks(fd int, names []string, buf []byte) {
	var st unix.Stat_t
	for _, name := range names {
		if w.ctx.Err() != nil {
			return
		}
		_, _ = unix.Readlinkat(fd, name, buf)
		_ = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// direntPlusSize is the size of a READDIRPLUS reply entry: struct
// fuse_entry_out (128 bytes) and struct fuse_dirent (24) with the name,
// padded to 8 bytes.
func direntPlusSize(nameLen int) int { return (128 + 24 + nameLen + 7) &^ 7 }

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// anchor is an open root directory of the mount: open_by_handle_at needs
// one, and it yields the handle layout to fill in.
type anchor struct {
	dir    string
	fd     int
	handle []byte // the root's handle, as a template
}

func (w *warmer) openAnchor() (*anchor, error) {
	fd, err := unix.Open(w.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	b := h.Bytes()
	if h.Type() != fuseHandleType || len(b) != 12 || binary.NativeEndian.Uint32(b) != 0 || binary.NativeEndian.Uint32(b[4:]) != fuse.FUSE_ROOT_ID {
		unix.Close(fd)
		return nil, errHandleFormat
	}
	return &anchor{dir: w.dir, fd: fd, handle: b}, nil
}

// open opens directory node for reading.
func (a *anchor) open(node uint64) (int, error) {
	if node == fuse.FUSE_ROOT_ID {
		return unix.Open(a.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	b := append([]byte(nil), a.handle...)
	binary.NativeEndian.PutUint32(b[0:], uint32(node>>32))
	binary.NativeEndian.PutUint32(b[4:], uint32(node))
	binary.NativeEndian.PutUint32(b[8:], entryGeneration)
	return unix.OpenByHandleAt(a.fd, unix.NewFileHandle(fuseHandleType, b), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
}

func (a *anchor) close() { unix.Close(a.fd) }
