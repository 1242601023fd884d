package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/strata-backup/strata/fs"
)

// server is the repository server: it owns the open repository, every
// mount and NBD export, and answers the control socket.
type server struct {
	repo *repository
	log  *slog.Logger
	// autoExit: started on demand by a client; exit once the last mount or
	// export is gone.
	autoExit bool
	// stop asks for a stop (strata stop, an idle on-demand server); the
	// server then waits for busy mounts (drain). force makes it not wait:
	// strata stop --force.
	stop      context.CancelFunc
	force     chan struct{} // closed by forceStop
	forceOnce sync.Once

	mu     sync.Mutex
	mounts map[string]*mountEntry // guarded by mu; by absolute mountpoint
	nbds   map[string]*nbdEntry   // guarded by mu; by listen address
	// mounting: volumes whose staging a mount request is mounting now, to
	// its mountpoint (reserveStaging); guarded by mu.
	mounting map[string]string
	// stopping: a stop is under way, so new mounts and exports are
	// refused; guarded by mu.
	stopping bool
	wg       sync.WaitGroup // connection handlers and mount waiters
	guard    *guard         // aborts our FUSE connections if we die mid-request
	creds    *credCache
	// closing: the server is past its last request; a connection still
	// queued is told to retry elsewhere (wireError.Retry).
	closing atomic.Bool
}

// forceStop makes a stop, asked for now or before, not wait for busy
// mounts.
func (s *server) forceStop() { s.forceOnce.Do(func() { close(s.force) }) }

// refuseIfStopping fails a request that would start something new while
// the server waits to stop.
func (s *server) refuseIfStopping() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return fail(exitError, "the server waits for busy mounts to be released before it exits ('strata status' lists them); try again once it has, or 'strata stop --force'",
			"the server is stopping")
	}
	return nil
}

type serveCmd struct {
	Config   string `type:"existingfile" placeholder:"FILE" help:"JSON config of mounts and NBD exports to start: {\"mounts\": [{\"target\": \"home@latest\", \"mountpoint\": \"/srv/home\"}], \"nbd\": [{\"listen\": \"unix:/run/strata-nbd.sock\"}]}."`
	AutoExit bool   `hidden:"" help:"Exit when the last mount or export is gone (servers started on demand)."`
	ReadyFD  int    `hidden:"" default:"-1" help:"Write 'ok' or an error to this fd once listening."`
}

func (c *serveCmd) Run(ctx context.Context, g *Globals) error {
	ready := func(err error) {}
	if c.ReadyFD >= 0 {
		f := os.NewFile(uintptr(c.ReadyFD), "ready")
		ready = func(err error) {
			if err != nil {
				fmt.Fprintln(f, toJSONLine(toWireError(err)))
			} else {
				fmt.Fprintln(f, "ok")
			}
			f.Close()
		}
	}
	var cfg *serverConfig
	if c.Config != "" {
		var err error
		if cfg, err = loadServerConfig(c.Config); err != nil {
			return err
		}
	}
	err := runServer(ctx, g, c.AutoExit, cfg, ready)
	if err != nil && c.ReadyFD >= 0 {
		ready(err)
	}
	return err
}

func toJSONLine(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// runServer opens the repository, listens on its socket and serves until
// ctx ends (SIGTERM/SIGINT), a stop request, or — with autoExit — the last
// mount or export going away. Shutdown flushes and unmounts everything.
func runServer(ctx context.Context, g *Globals, autoExit bool, cfg *serverConfig, ready func(error)) error {
	log := g.logger()
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	sock := socketPath(dir)
	if conn, err := dialServer(dir); err == nil {
		// One that answers is running; one that is shutting down (an
		// on-demand server whose last mount just went) says so, and
		// this one starts once it is gone.
		err := remoteCall(ctx, conn, dir, wireRequest{Op: "ping"}, nil, nil)
		if !errors.Is(err, errServerGone) {
			return fail(exitLocked, "use it (commands find it by itself) or stop it with 'strata stop'", "a strata server is already running for %s", dir)
		}
		waitServerGone(ctx, dir)
	}
	if addr := os.Getenv("STRATA_PPROF"); addr != "" {
		startProfiler(addr, log)
	}
	repo, err := openRepository(ctx, g, log, false)
	if err != nil {
		return err
	}
	// Unwrapping the key ran Argon2id over 64 MiB. That memory is garbage
	// now, but the collector has not seen it go, and until it does the
	// heap's target is sized by it: an idle server held ~70 MiB of it.
	// Returning it now costs one collection of a small heap.
	debug.FreeOSMemory()
	// The repository lock is ours, so a socket file left behind is stale,
	// and so is an earlier server's report of a shutdown that failed.
	os.Remove(sock)
	os.Remove(shutdownReport(dir))
	old := syscall.Umask(0o077)
	l, err := net.Listen("unix", sock)
	syscall.Umask(old)
	if err != nil {
		repo.Close()
		return fmt.Errorf("control socket: %w", err) // names the socket
	}
	os.Chmod(sock, 0o600)

	// stopped ends with the first SIGTERM or SIGINT (ctx) or a stop
	// request; serving, requests on the socket included, goes on until
	// the busy mounts are released (drain), so ops run under their own
	// context, which ends only when the shutdown starts.
	stopped, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx, endOps := context.WithCancel(context.WithoutCancel(ctx))
	defer endOps()
	s := &server{repo: repo, log: log, autoExit: autoExit, stop: cancel, force: make(chan struct{}),
		mounts: map[string]*mountEntry{}, nbds: map[string]*nbdEntry{}, mounting: map[string]string{}, guard: startGuard(log),
		creds: newCredCache(repo.dir, repo.credHash)}
	governMemory(ctx, log, s.memoryFloor)
	log.Info("server listening", "socket", sock, "pid", os.Getpid())
	if cfg != nil {
		if err := s.start(ctx, cfg); err != nil {
			l.Close()
			s.shutdown(sock, nil)
			return err
		}
	}
	ready(nil)
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			conn, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error("accept", "err", err)
				}
				return
			}
			if s.closing.Load() {
				// Not counted in wg, which the shutdown waits on.
				go s.refuseClosing(conn)
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(ctx, conn)
			}()
		}
	}()
	var unmountErrs []error
	for {
		force := s.drain(stopped)
		// Unmounting flushes; if that hangs (a disk that stopped
		// answering, a client stuck in a request) the process must
		// still end: what fsync, FLUSH and commit acknowledged is
		// durable already.
		stuck := time.AfterFunc(shutdownTimeout, func() {
			log.Error("shutdown did not finish; exiting anyway (acknowledged writes and commits are durable)", "after", shutdownTimeout)
			// Mounts whose server is gone would answer ENOTCONN to all.
			for _, m := range s.mountList() {
				syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH)
			}
			reportShutdown(dir, fmt.Errorf("the shutdown did not finish within %v (mounts were detached; what was written to staging since its last fsync or commit may be lost)", shutdownTimeout))
			os.Remove(sock)
			os.Exit(exitError)
		})
		busy, errs := s.unmountAll(force)
		unmountErrs = append(unmountErrs, errs...)
		if busy {
			// In use again since drain looked: serve on.
			stuck.Stop()
			continue
		}
		// From here on a client is told the server is going (it waits
		// for it to be gone, then retries: a new server, or the
		// repository in its own process). The listener stays open until
		// the repository is closed: closing it earlier reset clients
		// that had just dialed ("connection reset by peer").
		s.closing.Store(true)
		endOps()
		err = s.shutdown(sock, unmountErrs)
		l.Close()
		<-accepting
		stuck.Stop()
		break
	}
	if err != nil {
		reportShutdown(dir, err)
	}
	return err
}

// shutdownReport is where a server that could not shut down cleanly says
// why, for 'strata stop' (which cannot see its exit status).
func shutdownReport(dir string) string { return filepath.Join(dir, "shutdown-error") }

func reportShutdown(dir string, err error) {
	os.WriteFile(shutdownReport(dir), []byte(err.Error()+"\n"), 0o600)
}

// shutdownTimeout bounds a graceful shutdown; systemd's TimeoutStopSec in
// contrib/systemd/strata.service is longer, so strata gives up first and
// says why.
const shutdownTimeout = 3 * time.Minute

// memoryFloor is the floor of the server's memory limit for what it
// serves now: NBD exports, staging mounts, or read-only mounts only (see
// memoryFloorExport).
func (s *server) memoryFloor() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.nbds) > 0 {
		return memoryFloorExport
	}
	for _, m := range s.mounts {
		if !m.ReadOnly {
			return memoryFloorStaging
		}
	}
	return memoryFloorRead
}

// mountEntries returns the live mounts.
func (s *server) mountEntries() []*mountEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	mounts := make([]*mountEntry, 0, len(s.mounts))
	for _, m := range s.mounts {
		mounts = append(mounts, m)
	}
	return mounts
}

// unmountAll unmounts every mount. A mount that turns out busy stays
// mounted and serving, and busy says so, unless force: then it goes as
// one whose flush failed does. errs are of the mounts that went anyway.
func (s *server) unmountAll(force bool) (busy bool, errs []error) {
	for _, m := range s.mountEntries() {
		err := m.unmount()
		if err == nil {
			continue
		}
		if errors.Is(err, fs.ErrBusy) && !force {
			s.log.Warn("stop: a mount became busy again; serving on", "mountpoint", m.Mountpoint)
			busy = true
			continue
		}
		errs = append(errs, err)
		// The process is ending: it cannot keep the mount for a later
		// retry, as 'strata umount' does.
		if err := m.m.Abandon(); err != nil {
			errs = append(errs, err)
		}
	}
	return busy, errs
}

// shutdown unmounts and stops everything, then closes the repository;
// errs are of unmounts before it, to report with its own. Busy mounts go
// too: this is the end of the process.
func (s *server) shutdown(sock string, errs []error) error {
	_, uerrs := s.unmountAll(true)
	errs = append(errs, uerrs...)
	s.mu.Lock()
	nbds := make([]*nbdEntry, 0, len(s.nbds))
	for _, n := range s.nbds {
		nbds = append(nbds, n)
	}
	s.mu.Unlock()
	for _, n := range nbds {
		if err := n.close(); err != nil {
			errs = append(errs, fmt.Errorf("stop nbd %s: %w", n.Listen, err))
		}
	}
	s.wg.Wait()
	s.guard.stop()
	os.Remove(sock)
	if err := s.repo.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close repository: %w", err))
	}
	s.log.Info("server stopped")
	return errors.Join(errs...)
}

// refuseClosing tells a client that connected while the server shuts down
// to retry once it is gone (wireError.Retry).
func (s *server) refuseClosing(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(conn).ReadBytes('\n'); err != nil {
		return
	}
	json.NewEncoder(conn).Encode(wireMessage{Error: &wireError{Msg: errServerGone.Error(), Code: exitError, Retry: true}})
}

// handle serves one client connection: one request, progress, one answer.
// The operation's context ends when the client hangs up.
func (s *server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	var req wireRequest
	r := bufio.NewReader(conn)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	if err := json.Unmarshal(line, &req); err != nil {
		s.log.Warn("bad request on control socket", "err", err)
		return
	}
	spec, ok := operations()[req.Op]
	var enc sync.Mutex
	send := func(m wireMessage) {
		enc.Lock()
		defer enc.Unlock()
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		json.NewEncoder(conn).Encode(m)
	}
	if !ok {
		send(wireMessage{Error: &wireError{Msg: "unknown operation " + req.Op, Code: exitUsage}})
		return
	}
	if req.Cred != "" && !s.creds.accept(req.Cred, req.CredChecked) {
		send(wireMessage{Error: &wireError{Msg: errCredUnknown.Error(), Code: exitWrongKey, CredUnknown: true}})
		return
	}
	opCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A client that goes away cancels its operation.
	go func() {
		io.Copy(io.Discard, r)
		cancel()
	}()
	env := &opEnv{repo: s.repo, srv: s, dir: req.Dir, progress: func(p progress) { send(wireMessage{Progress: &p}) }}
	res, err := spec.fn(opCtx, env, req.Args)
	if err != nil {
		send(wireMessage{Error: toWireError(err)})
		return
	}
	raw, err := json.Marshal(res)
	if err != nil {
		send(wireMessage{Error: toWireError(err)})
		return
	}
	send(wireMessage{Result: raw, Done: true})
}

// maybeExit stops an on-demand server once nothing is mounted or served.
func (s *server) maybeExit() {
	if !s.autoExit {
		return
	}
	s.mu.Lock()
	idle := len(s.mounts) == 0 && len(s.nbds) == 0
	s.mu.Unlock()
	if idle {
		s.log.Info("nothing mounted or served any more; server exits")
		s.stop()
	}
}

// startServer starts `strata serve` in the background for dir and returns
// once it listens. The passphrase travels over a pipe, never argv or env.
func startServer(ctx context.Context, g *Globals, dir string) error {
	if _, err := loadConfig(dir); err != nil {
		return err // before anything is written into dir
	}
	creds, err := g.credentials(dir)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find strata executable: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logf.Close()
	passR, passW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	args := []string{"--repo", dir, "--passphrase-fd", "3"}
	if g.Identity != "" {
		args = append(args, "--identity", g.Identity)
	}
	for i := 0; i < g.Verbose; i++ {
		args = append(args, "-v")
	}
	args = append(args, "serve", "--auto-exit", "--ready-fd", "4")
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{passR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "STRATA_PASSPHRASE=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	passR.Close()
	readyW.Close()
	passW.Write(creds.passphrase)
	passW.Close()
	go cmd.Wait() // reap if it dies while we still run

	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(readyR).ReadString('\n')
		ch <- answer{strings.TrimSpace(line), err}
	}()
	select {
	case a := <-ch:
		readyR.Close()
		if a.line == "ok" {
			return nil
		}
		var we wireError
		if json.Unmarshal([]byte(a.line), &we) == nil && we.Msg != "" {
			return &userError{msg: we.Msg, hint: we.Hint, code: we.Code}
		}
		return fmt.Errorf("server did not start (see %s)", filepath.Join(dir, "server.log"))
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("server did not become ready within 2 minutes (see %s)", filepath.Join(dir, "server.log"))
	case <-ctx.Done():
		return ctx.Err()
	}
}

type stopCmd struct {
	Force bool `help:"Stop even while a mount is busy (a loop device or process holds it): the mount is torn down under its user, whose later writes fail and whose unflushed data is lost."`
}

type stopArgs struct {
	Force bool `json:"force,omitempty"`
}

// stopAnswer is the server's answer to stop.
type stopAnswer struct {
	Status string `json:"status"`
	PID    int    `json:"pid"`
}

// Run returns once the server has exited, not when it has been asked to:
// scripts follow a stop with what needs the repository left alone (a copy
// of it, unmounting its disk, another strata), and the server may still
// be flushing and closing the index for a while after it answers.
func (c *stopCmd) Run(ctx context.Context, g *Globals) error {
	var a stopAnswer
	if err := call(ctx, g, "stop", stopArgs{Force: c.Force}, &a); err != nil {
		return err
	}
	if a.PID == 0 {
		return nil // no server was running; call said so
	}
	dir, _ := g.repoDir()
	err := waitExit(ctx, a.PID, shutdownTimeout+30*time.Second, func() {
		fmt.Fprintf(os.Stderr, "strata: waiting for the server (PID %d) to flush and close the repository\n", a.PID)
	}, filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	if b, rerr := os.ReadFile(shutdownReport(dir)); rerr == nil {
		return fail(exitError, "see "+filepath.Join(dir, "server.log")+"; committed revisions are intact",
			"the server stopped, but not cleanly: %s", strings.TrimSpace(string(b)))
	}
	if !g.JSON {
		fmt.Printf("stopped the strata server (PID %d): staging is saved, its mounts and exports are gone\n", a.PID)
	}
	return nil
}

func opStop(ctx context.Context, env *opEnv, a stopArgs) (any, error) {
	s := env.srv
	if s == nil {
		return nil, errors.New("no server to stop")
	}
	if a.Force {
		s.forceStop()
	} else if busy, clients := s.busyMounts(), s.nbdClients(); len(busy) > 0 || len(clients) > 0 {
		var lines []string
		for _, b := range busy {
			lines = append(lines, b.String())
		}
		// Stopping cuts them off: a VM's disk vanishes, a copy fails
		// half-way.
		lines = append(lines, clients...)
		return nil, fail(exitError, busyHint+"; let an NBD copy finish, shut a VM down; then stop again; or 'strata stop --force', which tears mounts down and cuts NBD clients off: later writes fail and what was not flushed is lost",
			"not stopping: %s; the server keeps serving", strings.Join(lines, "; "))
	}
	// Answer first; the shutdown runs after this handler returns.
	go s.stop()
	return stopAnswer{Status: "stopping", PID: os.Getpid()}, nil
}

// waitExit waits until process pid has exited, calling slow once if that
// takes more than a moment, and fails after limit naming the server's
// log.
func waitExit(ctx context.Context, pid int, limit time.Duration, slow func(), logPath string) error {
	const poll, patience = 50 * time.Millisecond, 2 * time.Second
	start := time.Now()
	told := false
	for !exited(pid) {
		if !told && time.Since(start) > patience {
			slow()
			told = true
		}
		if time.Since(start) > limit {
			return fmt.Errorf("the server (PID %d) is still running %v after it was asked to stop (see %s)", pid, limit, logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

// exited reports whether process pid has exited as a whole. A zombie
// has, once its last thread has: it closed its files, the repository
// lock among them, and only waits for its parent (a script's `strata
// serve &`) to collect its status. (A zombie main thread alone is what
// guard's dying looks for; its other threads still hold the files.)
func exited(pid int) bool {
	st, ok := procStatus(pid)
	return !ok || (st.zombie && st.threads <= 1)
}
