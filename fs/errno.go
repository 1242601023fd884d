package fs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/strata-backup/strata/layers"
)

// errnoTable maps layers' sentinels to errno. Order matters only where an
// error could match several entries; wrapped chains match with errors.Is.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{layers.ErrNotFound, syscall.ENOENT},
	{layers.ErrUnknownVolume, syscall.ENOENT},
	{layers.ErrUnknownRevision, syscall.ENOENT},
	{layers.ErrExists, syscall.EEXIST},
	{layers.ErrNotDir, syscall.ENOTDIR},
	{layers.ErrIsDir, syscall.EISDIR},
	{layers.ErrNotEmpty, syscall.ENOTEMPTY},
	{layers.ErrReadOnly, syscall.EROFS},
	{layers.ErrNoSpace, syscall.ENOSPC},
	{syscall.ENOSPC, syscall.ENOSPC},
	{layers.ErrInvalid, syscall.EINVAL},
	{layers.ErrNoXattr, syscall.ENODATA},
	{layers.ErrNameTooLong, syscall.ENAMETOOLONG},
	{layers.ErrRange, syscall.ERANGE},
	{context.Canceled, syscall.EINTR},
}

// Errno maps an error from layers to the errno a FUSE reply carries. Known
// sentinels (matched with errors.Is, so wrapping is fine) map to their
// errno; anything else is EIO. It exists because go-fuse's ToStatus turns
// wrapped errors into ENOSYS.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	return syscall.EIO
}

// errLog logs the causes of EIO replies, at most burst per window, so a
// failing store under a busy reader does not flood the log.
type errLog struct {
	logger *slog.Logger
	now    func() time.Time

	mu         sync.Mutex // guards the fields below
	windowFrom time.Time
	logged     int
	suppressed int
}

const (
	errLogWindow = 10 * time.Second
	errLogBurst  = 10
)

// status converts err to a fuse.Status, logging unexpected errors.
func (l *errLog) status(op string, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	errno := Errno(err)
	if errno == syscall.EIO {
		l.log(op, err)
	}
	return fuse.Status(errno)
}

func (l *errLog) log(op string, err error) {
	now := l.now()
	l.mu.Lock()
	if now.Sub(l.windowFrom) >= errLogWindow {
		if l.suppressed > 0 {
			l.logger.Warn("fuse: errors suppressed", "count", l.suppressed)
		}
		l.windowFrom, l.logged, l.suppressed = now, 0, 0
	}
	ok := l.logged < errLogBurst
	if ok {
		l.logged++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if ok {
		l.logger.Error("fuse: I/O error", "op", op, "err", err)
	}
}
