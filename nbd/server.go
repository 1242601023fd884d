package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil means time.Now

	// Workers bounds the requests one connection runs at once (default 32).
	Workers int
	// BufferBytes bounds the payload memory one connection holds for
	// requests in flight (default 128 MiB, at least MaxRequest).
	BufferBytes int64
	// MaxRequest is the largest READ or WRITE accepted and the maximum
	// block size advertised (default and upper limit 32 MiB).
	MaxRequest int
	// HandshakeTimeout bounds option haggling (default 30 s).
	HandshakeTimeout time.Duration
	// WritableMultiConn advertises NBD_FLAG_CAN_MULTI_CONN for writable
	// exports too. Connections to one export name share one Export, so a
	// FLUSH on any connection covers writes from all of them; that is what
	// the flag promises, provided the Export's Flush covers every write.
	// Read-only exports always advertise it.
	WritableMultiConn bool
	// KeepOpen keeps an export open from its first use until Close instead
	// of closing it after its last connection: an overlay export then keeps
	// its writes across reconnects, and a name like vm@latest stays bound to
	// the revision it first resolved to.
	KeepOpen bool
}

const (
	defaultWorkers     = 32
	defaultBufferBytes = 128 << 20
	maxRequestLimit    = 32 << 20
	defaultHandshake   = 30 * time.Second
	maxOptionLen       = 64 << 10
)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.MaxRequest <= 0 || o.MaxRequest > maxRequestLimit {
		o.MaxRequest = maxRequestLimit
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = defaultBufferBytes
	}
	o.BufferBytes = max(o.BufferBytes, int64(o.MaxRequest))
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = defaultHandshake
	}
	return o
}

// Server serves exports from a Resolver on any number of listeners.
type Server struct {
	resolver Resolver
	opts     Options
	log      *slog.Logger
	bufs     *bufPool
	ioErrors rateLimit

	closeCtx    context.Context // done once Close is called
	closeCancel context.CancelFunc
	wg          sync.WaitGroup // Serve calls and connections

	mu      sync.Mutex             // guards exports and closed
	exports map[string]*openExport // exports with at least one user, by name
	closed  bool
}

// openExport is an Export shared by the connections using one name.
type openExport struct {
	name string
	exp  Export
	refs int // guarded by Server.mu
}

// NewServer returns a server for the exports r resolves.
func NewServer(r Resolver, opts Options) *Server {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		resolver:    r,
		opts:        opts,
		log:         opts.Logger,
		bufs:        newBufPool(opts.MaxRequest),
		ioErrors:    rateLimit{now: opts.Now, window: time.Minute, burst: 10},
		closeCtx:    ctx,
		closeCancel: cancel,
		exports:     make(map[string]*openExport),
	}
}

// Serve accepts connections on l until ctx is done or Close is called; it
// closes l. Cancelling ctx also drops the connections accepted here and
// returns nil once they are gone; after Close it returns ErrServerClosed.
// Any other accept error is returned. Serve may run on several listeners
// (TCP and unix) at once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClose := context.AfterFunc(s.closeCtx, cancel)
	defer stopClose()
	stopListen := context.AfterFunc(ctx, func() { l.Close() })
	defer stopListen()

	var conns sync.WaitGroup
	defer conns.Wait()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				if s.closeCtx.Err() != nil {
					return ErrServerClosed
				}
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off, as
				// net/http does, instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd accept", "err", err, "retry_in", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
				continue
			}
			l.Close()
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.wg.Add(1)
		conns.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer conns.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// Close stops every Serve, drops all connections and waits until their
// goroutines have finished and their exports are closed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.closeCancel()
	s.wg.Wait()
	// Only exports kept open by Options.KeepOpen remain.
	s.mu.Lock()
	kept := s.exports
	s.exports = make(map[string]*openExport)
	s.mu.Unlock()
	for name, e := range kept {
		s.closeExport(name, e.exp)
	}
	return nil
}

// acquire returns the export called name, opening it if no connection uses
// it yet.
func (s *Server) acquire(ctx context.Context, name string) (*openExport, error) {
	s.mu.Lock()
	if e := s.exports[name]; e != nil {
		e.refs++
		s.mu.Unlock()
		return e, nil
	}
	s.mu.Unlock()

	exp, err := s.resolver.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if e := s.exports[name]; e != nil {
		// Another connection opened it meanwhile: share theirs.
		e.refs++
		s.mu.Unlock()
		s.closeExport(name, exp)
		return e, nil
	}
	e := &openExport{name: name, exp: exp, refs: 1}
	s.exports[name] = e
	s.mu.Unlock()
	return e, nil
}

// Connections counts the connections using each export now, by the name
// clients gave (exports kept open with none are left out).
func (s *Server) Connections() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for name, e := range s.exports {
		if e.refs > 0 {
			out[name] = e.refs
		}
	}
	return out
}

// release drops one user of e and closes it after the last (unless
// Options.KeepOpen).
func (s *Server) release(e *openExport) {
	s.mu.Lock()
	e.refs--
	last := e.refs == 0 && !s.opts.KeepOpen
	if last {
		delete(s.exports, e.name)
	}
	s.mu.Unlock()
	if last {
		s.closeExport(e.name, e.exp)
	}
}

func (s *Server) closeExport(name string, exp Export) {
	if c, ok := exp.(io.Closer); ok {
		if err := c.Close(); err != nil {
			s.log.Warn("close nbd export", "export", name, "err", err)
		}
	}
}

// logIOError logs an unexpected export error, rate-limited.
func (s *Server) logIOError(msg string, attrs ...any) {
	ok, dropped := s.ioErrors.allow()
	if !ok {
		return
	}
	if dropped > 0 {
		attrs = append(attrs, "suppressed", dropped)
	}
	s.log.Error(msg, attrs...)
}

// Listen opens a listener from an address as the CLI spells it:
// "tcp://HOST:PORT", "unix:PATH" or "unix://PATH". A unix socket file left
// by a dead server is removed first; one a live server answers on is an
// error.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		return lc.Listen(ctx, "tcp", strings.TrimPrefix(addr, "tcp://"))
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//")
		if path == "" {
			return nil, fmt.Errorf("listen on %q: empty socket path", addr)
		}
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			var d net.Dialer
			if c, err := d.DialContext(ctx, "unix", path); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen on %s: a server is already answering", path)
			}
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("remove stale socket: %w", err)
			}
		}
		return lc.Listen(ctx, "unix", path)
	default:
		return nil, fmt.Errorf("listen on %q: want tcp://HOST:PORT or unix:PATH", addr)
	}
}
