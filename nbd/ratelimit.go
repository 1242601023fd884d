package nbd

import (
	"sync"
	"time"
)

// rateLimit lets a burst of events through per window and counts the rest,
// so a failing disk under a busy client logs a few lines a minute, not one
// per request.
type rateLimit struct {
	now    func() time.Time
	window time.Duration
	burst  int

	mu         sync.Mutex // guards the fields below
	start      time.Time  // beginning of the current window
	count      int        // events let through in the window
	suppressed int        // events dropped since the last one let through
}

// allow reports whether to log this event and how many were dropped since
// the last one logged.
func (r *rateLimit) allow() (ok bool, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.start) >= r.window {
		r.start, r.count = now, 0
	}
	if r.count >= r.burst {
		r.suppressed++
		return false, 0
	}
	r.count++
	dropped, r.suppressed = r.suppressed, 0
	return true, dropped
}
