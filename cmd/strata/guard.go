package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/strata-backup/strata/fs"
)

// guardCmd is the server's guard, a child process started by serve. A
// server killed (SIGKILL, the OOM killer, a crash) while one of its own
// threads waited on its staging mount cannot finish exiting: that thread
// waits uninterruptibly for a reply only the server could send, and the
// mount's /dev/fuse stays open, so every process touching the mount hangs
// too, and the repository lock is never released. The guard learns the
// server's FUSE connections on stdin ("+N", "-N") and, when it sees the
// server dying, aborts them; the server then exits and the next mount
// cleans up as after any crash.
type guardCmd struct {
	PID int `required:"" help:"The server's process id."`
}

// guardPoll is how often the guard looks at the server.
const guardPoll = 200 * time.Millisecond

func (c *guardCmd) Run(g *Globals) error {
	// Signals meant for a foreground server's process group are not
	// for the guard: it ends when the server does.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	log := g.logger()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	conns := map[uint32]bool{} // the server's live FUSE connections
	tick := time.NewTicker(guardPoll)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return nil // the server closed its end: it exited whole
			}
			n, err := strconv.ParseUint(strings.TrimLeft(l, "+-"), 10, 32)
			switch {
			case err != nil:
			case l[0] == '+':
				conns[uint32(n)] = true
			default:
				delete(conns, uint32(n))
			}
		case <-tick.C:
			switch dying(c.PID) {
			case processGone:
				return nil
			case processDying:
				for n := range conns {
					if err := fs.AbortConn(n); err != nil {
						log.Error("guard: server died with its mount in use", "pid", c.PID, "err", err)
					} else {
						log.Warn("guard: server died; aborted its FUSE connection so it can exit", "pid", c.PID, "conn", n)
					}
				}
				return nil
			}
		}
	}
}

type processState int

const (
	processRunning processState = iota
	processDying
	processGone
)

// dying reads the server's state: its main thread exited (a zombie whose
// other threads have not) or SIGKILL is pending.
func dying(pid int) processState {
	st, ok := procStatus(pid)
	if !ok {
		return processGone
	}
	if st.zombie || st.killPending {
		return processDying
	}
	return processRunning
}

// procState is what dying and exited read of a process.
type procState struct {
	zombie      bool // the main thread has exited (State Z or X)
	killPending bool // SIGKILL is pending
	threads     int
}

// procStatus reads /proc/PID/status; ok is false when there is no such
// process.
func procStatus(pid int) (st procState, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			st.zombie = strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X")
		case "ShdPnd", "SigPnd":
			if m, err := strconv.ParseUint(v, 16, 64); err == nil && m&(1<<(syscall.SIGKILL-1)) != 0 {
				st.killPending = true
			}
		case "Threads":
			st.threads, _ = strconv.Atoi(v)
		}
	}
	return st, true
}

// guard is the server's end of its guard process.
type guard struct {
	mu  sync.Mutex
	w   io.WriteCloser // nil: no guard
	log *slog.Logger
}

// startGuard starts the guard process for this server. Without one (the
// executable is gone, say) the server runs as before, unguarded.
func startGuard(log *slog.Logger) *guard {
	exe, err := os.Executable()
	if err != nil {
		log.Warn("guard: not started", "err", err)
		return &guard{log: log}
	}
	cmd := exec.Command(exe, "guard", "--pid", strconv.Itoa(os.Getpid()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	w, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		log.Warn("guard: not started", "err", err)
		return &guard{log: log}
	}
	go cmd.Wait() // reap it
	return &guard{w: w, log: log}
}

// add and remove tell the guard about a mount's FUSE connection.
func (g *guard) add(conn uint32)    { g.send("+", conn) }
func (g *guard) remove(conn uint32) { g.send("-", conn) }

func (g *guard) send(op string, conn uint32) {
	if g == nil || g.w == nil || conn == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := fmt.Fprintf(g.w, "%s%d\n", op, conn); err != nil {
		g.log.Warn("guard: gone", "err", err)
		g.w = nil
	}
}

// stop ends the guard after a clean shutdown.
func (g *guard) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w != nil {
		g.w.Close()
		g.w = nil
	}
}
