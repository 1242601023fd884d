package tests

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeForeground runs the server as systemd would.
// Steps: commit one revision; write a config mounting staging and the
// latest revision; start `strata serve --config` in the foreground; write
// a file into the staging mount through the configured mount; send
// SIGTERM; start it again, commit through the socket, stop it with
// `strata stop`.
// Pass: both mounts appear; SIGTERM ends the server with exit 0 and both
// mounts are gone; after restart the file written before SIGTERM is in
// staging and in the new revision.
func TestServeForeground(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	os.WriteFile(filepath.Join(stage, "one"), []byte("one\n"), 0o644)
	r.must("commit", "home")
	r.must("umount", stage)

	latest := r.mkdir("mnt/latest")
	cfg := filepath.Join(r.work, "serve.json")
	os.WriteFile(cfg, []byte(`{"mounts": [{"target": "home", "mountpoint": "`+stage+`"}, {"target": "home@latest", "mountpoint": "`+latest+`"}]}`), 0o600)
	start := func() *exec.Cmd {
		cmd := exec.Command(strataBin, "serve", "--config", cfg)
		cmd.Env = r.env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 300; i++ {
			if _, err := os.Stat(filepath.Join(latest, "one")); err == nil {
				return cmd
			}
			time.Sleep(100 * time.Millisecond)
		}
		cmd.Process.Kill()
		t.Fatal("configured mounts did not appear within 30 s")
		return nil
	}
	cmd := start()
	if err := os.WriteFile(filepath.Join(stage, "two"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("server after SIGTERM: %v", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), stage) || strings.Contains(string(mounts), latest) {
		t.Fatalf("mounts left after SIGTERM:\n%s", mounts)
	}

	cmd = start()
	b, err := os.ReadFile(filepath.Join(stage, "two"))
	if err != nil || string(b) != "two\n" {
		t.Fatalf("file written before SIGTERM reads %q, %v", b, err)
	}
	r.must("commit", "home")
	r.must("stop")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("server after strata stop: %v", err)
	}
	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@latest", rev)
	if b, _ := os.ReadFile(filepath.Join(rev, "two")); string(b) != "two\n" {
		t.Errorf("new revision lacks the file written before SIGTERM: %q", b)
	}
}

// TestLockWait: a command that finds the repository held by another strata
// without a server socket (here a restore to a pipe nobody reads yet)
// fails at once with exit 11 under --lock-wait 0, and with the default wait
// gets through as soon as the holder lets go.
func TestLockWait(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "vm", "--block", "8M")
	r.must("commit", "vm")
	holder := exec.Command(strataBin, "restore", "vm@latest", "-")
	holder.Env = r.env
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	// The restore blocks on the full pipe while it holds the lock.
	var res result
	for i := 0; i < 100; i++ {
		if res = r.run("--lock-wait", "0", "list"); res.code == 11 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.code != 11 || !strings.Contains(res.stderr, "in use") {
		t.Fatalf("list while locked, --lock-wait 0: exit %d, stderr %q; want 11 and 'in use'", res.code, res.stderr)
	}
	waiter := exec.Command(strataBin, "list")
	waiter.Env = r.env
	var wout, werr strings.Builder
	waiter.Stdout, waiter.Stderr = &wout, &werr
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the waiter finds the lock held
	n, _ := io.Copy(io.Discard, out)
	if err := holder.Wait(); err != nil || n != 8<<20 {
		t.Fatalf("restore: %v, %d bytes", err, n)
	}
	if err := waiter.Wait(); err != nil {
		t.Fatalf("list waiting for the lock: %v\n%s", err, werr.String())
	}
	if !strings.Contains(werr.String(), "waiting") || !strings.Contains(wout.String(), "vm") {
		t.Errorf("list after waiting: stdout %q, stderr %q; want the volume listed and a note that it waited", wout.String(), werr.String())
	}
}

// TestProfiler: a server started with STRATA_PPROF in its environment
// serves Go's heap profile there.
func TestProfiler(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "home")
	addr := "127.0.0.1:" + freePort(t)
	mnt := r.mkdir("mnt")
	if res := r.runEnv([]string{"STRATA_PPROF=" + addr}, "mount", "home", mnt); res.code != 0 {
		t.Fatalf("mount: exit %d: %s", res.code, res.stderr)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatalf("profile: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Errorf("heap profile: %s\n%.200s", resp.Status, body)
	}
	r.must("umount", mnt)
}

// TestIdleServerMemory: a server that has just mounted a volume holds
// little anonymous memory. Unwrapping the key runs Argon2id over 64 MiB;
// kept until the collector happened to run, that memory also sized the
// heap's growth target, and an idle mount held ~70 MiB.
// Pass: the server's RssAnon, right after `strata mount` returns, is under
// 32 MiB (~4 MiB measured).
func TestIdleServerMemory(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.serverPID()))
	if err != nil {
		t.Fatal(err)
	}
	var kib int
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
		}
	}
	if kib == 0 {
		t.Fatalf("no RssAnon in /proc/PID/status:\n%s", status)
	}
	if kib > 32<<10 {
		t.Errorf("idle server RssAnon %d KiB, want under 32 MiB", kib)
	}
	r.must("umount", stage)
}

// TestStopWaitsForExit: `strata stop` returns only once the server has
// exited and let go of the repository, so a script may copy the
// repository or unmount its disk next.
// Steps: start a server with a staging mount and a file written; run
// `strata stop`.
// Pass: right after it returns, the server process is gone and the
// repository lock can be taken.
func TestStopWaitsForExit(t *testing.T) {
	r := newRepo(t)
	stage := r.mountNewVolume("home")
	if err := os.WriteFile(filepath.Join(stage, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := r.serverPID()
	r.must("stop")
	if st := procState(pid); st != 0 && st != 'Z' {
		t.Errorf("server (PID %d) in state %c after strata stop returned; want it gone", pid, st)
	}
	f, err := os.OpenFile(filepath.Join(r.dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("repository lock still held after strata stop returned: %v", err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// procState is the state letter of process pid (0: no such process).
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// TestServerNotAnswering stops the server with SIGSTOP while clients
// talk to it.
// Steps: mount staging (a server starts); SIGSTOP the server; run
// `strata list` with the client's ping interval shortened to 1 s; SIGCONT.
// Pass: list fails within a minute (the ping waits 10 s) saying the server
// does not answer and naming `kill PID`, instead of waiting forever; after
// SIGCONT the server answers again.
func TestServerNotAnswering(t *testing.T) {
	r := newRepo(t)
	r.mountNewVolume("home")
	pid := r.serverPID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	start := time.Now()
	res := r.runEnv([]string{"STRATA_TEST_PING_AFTER=1s"}, "list")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("list against a stopped server took %v", took)
	}
	if res.code == 0 || !strings.Contains(res.stderr, "does not answer") || !strings.Contains(res.stderr, fmt.Sprintf("kill %d", pid)) {
		t.Errorf("list against a stopped server: exit %d, stderr %q; want it to name the server that does not answer", res.code, res.stderr)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	r.must("list")
}
