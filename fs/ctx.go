package fs

import (
	"context"
	"time"
)

// reqCtx is the context of one FUSE request: it is done when the kernel
// interrupts the request (the caller got a signal). It avoids a goroutine
// per request that context.WithCancel plus a watcher would need.
type reqCtx struct {
	cancel <-chan struct{}
}

func newCtx(cancel <-chan struct{}) context.Context { return reqCtx{cancel} }

func (c reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c reqCtx) Done() <-chan struct{}       { return c.cancel }
func (c reqCtx) Value(any) any               { return nil }

func (c reqCtx) Err() error {
	if c.cancel == nil {
		return nil
	}
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}
