package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/strata-backup/strata/layers"
)

// Export is one block device served over NBD. Methods are called
// concurrently from many requests and connections.
type Export interface {
	// Size is the device size in bytes; it must not change while served.
	Size() int64
	// ReadOnly makes the server advertise the export read-only and refuse
	// writes with EPERM before they reach WriteAt.
	ReadOnly() bool
	// ReadAt fills p from off; holes read as zeros.
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// WriteAt writes p at off. It need not be durable before Flush.
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Flusher is an Export whose writes become durable on Flush (NBD_CMD_FLUSH
// and the FUA flag). Without it FLUSH succeeds at once.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Zeroer is an Export that can make a range read as zeros cheaply, ideally
// as a hole (NBD_CMD_TRIM and NBD_CMD_WRITE_ZEROES). Without it TRIM does
// nothing and WRITE_ZEROES writes zeros.
type Zeroer interface {
	Zero(ctx context.Context, off, length int64) error
}

// Extenter is an Export that reports where its holes are
// (NBD_CMD_BLOCK_STATUS with the base:allocation context). Without it every
// byte is reported as data.
type Extenter interface {
	Extents(ctx context.Context, off, length int64) ([]layers.Extent, error)
}

// BlockSizer is an Export with a natural block size, advertised to clients
// as the preferred request size. Without it 4096 is advertised.
type BlockSizer interface {
	BlockSize() int
}

// An Export that is also an io.Closer is closed when the last connection
// using it ends.

// Resolver turns export names into exports.
type Resolver interface {
	// Open returns the export called name; an error wrapping
	// ErrUnknownExport when there is none. The server shares one opened
	// export among all connections asking for the same name at the same
	// time, and closes it (if it is an io.Closer) when the last one ends.
	Open(ctx context.Context, name string) (Export, error)
	// List returns the names NBD_OPT_LIST advertises.
	List(ctx context.Context) ([]string, error)
}

var (
	// ErrUnknownExport is what a Resolver returns (wrapped) for a name it
	// does not serve; the client gets NBD_REP_ERR_UNKNOWN.
	ErrUnknownExport = errors.New("unknown export")
	// ErrServerClosed is returned by Serve after Close. It matches
	// net.ErrClosed too, as the listener is closed.
	ErrServerClosed = fmt.Errorf("nbd server closed: %w", net.ErrClosed)
)

// errno maps an Export error to the NBD error value sent to the client.
// expected reports whether the error is a client mistake, a full repository
// or a shutdown rather than an I/O failure worth logging.
func errno(err error) (code uint32, expected bool) {
	switch {
	case errors.Is(err, layers.ErrReadOnly), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EPERM):
		return errPerm, true
	case errors.Is(err, layers.ErrInvalid), errors.Is(err, syscall.EINVAL):
		return errInval, true
	case errors.Is(err, layers.ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc, true
	case errors.Is(err, context.Canceled):
		return errShutdown, true
	default:
		return errIO, false
	}
}
