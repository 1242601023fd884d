package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/strata-backup/strata/fs"
)

// busyMount is a mount that something holds, so unmounting it now would
// fail (or, forced, cut off a writer: a filesystem on a loop device over
// a staging disk.img loses what it has not written back yet).
// busyHint says how to release a busy mount: the holders named are
// processes (files open, a working directory) or, for a block volume's
// disk.img, a loop device.
const busyHint = "release it first (close the files and leave the directories the processes listed hold; for a disk.img, umount the filesystem on its loop device and detach it with 'losetup -d')"

type busyMount struct {
	Mountpoint string   `json:"mountpoint"`
	Target     string   `json:"target"`
	Holders    []string `json:"holders,omitempty"` // empty: not found
}

func (b busyMount) String() string {
	held := "something strata cannot see (another mount namespace, a memory map)"
	if len(b.Holders) > 0 {
		held = strings.Join(b.Holders, "; ")
	}
	return fmt.Sprintf("%s (%s) is busy, held by %s", b.Mountpoint, b.Target, held)
}

// busyMounts probes every mount (fs.Mount.Busy) and says what holds the
// busy ones. The server's own files on a mount (the staging warmer's open
// directories, which Unmount closes first) do not make it busy.
func (s *server) busyMounts() []busyMount {
	var out []busyMount
	for _, e := range s.mountEntries() {
		busy, err := e.m.Busy()
		if err != nil {
			s.log.Warn("stop: probe mount", "mountpoint", e.Mountpoint, "err", err)
			continue // gone meanwhile, most likely; unmount will tell
		}
		if !busy {
			continue
		}
		b, own := busyMountOf(e.Mountpoint, e.Target)
		if own && len(b.Holders) == 0 {
			continue
		}
		out = append(out, b)
	}
	return out
}

// busyMountOf says what holds the mount at mountpoint, leaving out this
// process (own: it holds something there too).
func busyMountOf(mountpoint, target string) (b busyMount, own bool) {
	b = busyMount{Mountpoint: mountpoint, Target: target}
	for _, h := range fs.Holders(mountpoint) {
		if h.PID == os.Getpid() {
			own = true
			continue
		}
		b.Holders = append(b.Holders, h.What)
	}
	return b, own
}

// drainPoll is how often a stopping server looks whether its busy mounts
// were released: a second at most between the release and the exit.
const drainPoll = time.Second

// drain waits for a stop (stopped ends: the first SIGTERM or SIGINT,
// strata stop, an idle on-demand server), then until no mount is busy,
// serving everything meanwhile. A busy mount would have to be torn down
// under its user: a loop device over a staging disk.img then gets EIO
// and its filesystem loses what it had not written back. So the server
// flushes what it has, says loudly what holds the mount, and waits for
// its release; a second SIGTERM or SIGINT, or strata stop --force, stops
// it at once (force).
func (s *server) drain(stopped context.Context) (force bool) {
	<-stopped.Done()
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	// The first signal went to main's context; a second comes here.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	var told time.Time
	flushed := false
	for {
		select {
		case <-s.force:
			return true
		default:
		}
		busy := s.busyMounts()
		if len(busy) == 0 {
			return false
		}
		if !flushed {
			// What was written so far survives whatever comes next.
			s.flushMounts(busy)
			flushed = true
		}
		if time.Since(told) >= time.Minute {
			for _, b := range busy {
				s.log.Error("stop: mount is busy; serving it on until it is released (unmount what holds it), or until 'strata stop --force' or a second SIGTERM, which tear it down and lose what its user has not flushed",
					"mountpoint", b.Mountpoint, "target", b.Target, "held_by", strings.Join(b.Holders, "; "))
			}
			told = time.Now()
		}
		select {
		case <-s.force:
			return true
		case sig := <-sigs:
			s.log.Warn("stop: second signal; tearing busy mounts down", "signal", sig.String())
			return true
		case <-time.After(drainPoll):
		}
	}
}

// flushMounts makes what the busy staging mounts hold durable.
func (s *server) flushMounts(busy []busyMount) {
	s.mu.Lock()
	var flush []func(context.Context) error
	for _, b := range busy {
		if e := s.mounts[b.Mountpoint]; e != nil && e.flush != nil {
			flush = append(flush, e.flush)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, f := range flush {
		if err := f(ctx); err != nil {
			s.log.Error("stop: flush of a busy mount", "err", err)
		}
	}
}
