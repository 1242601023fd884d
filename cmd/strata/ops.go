package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-backup/strata/store"
)

// opEnv is what an operation runs with: the open repository and, inside the
// server process, the server (for mounts and exports).
type opEnv struct {
	repo     *repository
	srv      *server // nil in a one-shot process
	dir      string  // the client's working directory
	progress func(progress)
}

// opFunc runs one operation. Arguments and results are JSON so the same
// function serves the socket and in-process calls.
type opFunc func(ctx context.Context, env *opEnv, args json.RawMessage) (any, error)

type opSpec struct {
	fn opFunc
	// needsServer: the operation leaves something running (a mount, an
	// export), so it must run in a server process.
	needsServer bool
	// rebuildsIndex: the operation replaces the index, so a damaged
	// one must not stop it from opening the repository.
	rebuildsIndex bool
}

// operations is the table of everything a client can ask for.
func operations() map[string]opSpec {
	return map[string]opSpec{
		"volume.create":  {fn: typed(opVolumeCreate)},
		"volume.list":    {fn: opVolumeList},
		"volume.rm":      {fn: typed(opVolumeRemove)},
		"commit":         {fn: typed(opCommit)},
		"list":           {fn: typed(opList)},
		"diff":           {fn: typed(opDiff)},
		"protect":        {fn: typed(opProtect)},
		"mount":          {fn: typed(opMount), needsServer: true},
		"umount":         {fn: typed(opUmount)},
		"nbd.serve":      {fn: typed(opNBDServe), needsServer: true},
		"nbd.stop":       {fn: typed(opNBDStop)},
		"scrub":          {fn: typed(opScrub)},
		"repair":         {fn: opRepair, rebuildsIndex: true},
		"repair.recount": {fn: typed(opRecount)},
		"status":         {fn: opStatus},
		"prune":          {fn: typed(opPrune)},
		"restore":        {fn: typed(opRestore)},
		"stop":           {fn: typed(opStop)},
		"ping":           {fn: opPing},
	}
}

// typed adapts an operation on decoded arguments to an opFunc.
func typed[T any](fn func(context.Context, *opEnv, T) (any, error)) opFunc {
	return func(ctx context.Context, env *opEnv, raw json.RawMessage) (any, error) {
		a, err := decode[T](raw)
		if err != nil {
			return nil, err
		}
		return fn(ctx, env, a)
	}
}

// decode unmarshals op arguments.
func decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode arguments: %w", err)
	}
	return v, nil
}

// call runs op with args wherever it must run — on a server that answers
// the socket, in a server started for it, or in this process — and decodes
// the result into out.
func call(ctx context.Context, g *Globals, op string, args any, out any) error {
	spec, ok := operations()[op]
	if !ok {
		return fmt.Errorf("unknown operation %q", op)
	}
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encode arguments: %w", err)
	}
	wd, _ := os.Getwd()
	req := wireRequest{Op: op, Args: raw, Dir: wd}
	pr := newProgressPrinter(os.Stderr, g.JSON)
	defer pr.finish()

	// A server that just stopped (the last mount went, an on-demand
	// server exits) closes its socket before it lets go of the lock, and
	// another command may hold it briefly too: wait for it a while, as
	// restic's --retry-lock does, answering whoever comes up meanwhile.
	deadline := time.Now().Add(g.LockWait)
	waited, retried := false, false
	for {
		err := callOnce(ctx, g, spec, dir, req, args, out, pr)
		if errors.Is(err, errServerGone) && !retried {
			// Once: where the repository is now (a new server, or
			// this process once the old one let go of the lock).
			retried = true
			waitServerGone(ctx, dir)
			continue
		}
		var ue *userError
		if !errors.As(err, &ue) || ue.code != exitLocked || !time.Now().Before(deadline) {
			return err
		}
		if !waited {
			fmt.Fprintf(os.Stderr, "strata: repository is in use; waiting up to %v for it (--lock-wait)\n", time.Until(deadline).Round(time.Second))
			waited = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// callOnce is one attempt of call: through a running server, a server
// started for it, or in this process.
func callOnce(ctx context.Context, g *Globals, spec opSpec, dir string, req wireRequest, args, out any, pr *progressPrinter) error {
	op, raw, wd := req.Op, req.Args, req.Dir
	conn, err := dialServer(dir)
	if err == nil {
		if req.Cred, err = g.givenCredHash(dir); err != nil {
			conn.Close()
			return err
		}
		err := remoteCall(ctx, conn, dir, req, out, pr.update)
		if !errors.Is(err, errCredUnknown) {
			return err
		}
		// Another entry's passphrase, or a wrong one: the key ring
		// tells (one Argon2 run, as a command without a server).
		if _, err := unlock(g, dir); err != nil {
			return err
		}
		req.CredChecked = true
		conn, err := dialServer(dir)
		if err != nil {
			return fmt.Errorf("connect to the server again: %w", err)
		}
		return remoteCall(ctx, conn, dir, req, out, pr.update)
	}
	if spec.needsServer {
		if err := startServer(ctx, g, dir); err != nil {
			return err
		}
		conn, err := dialServer(dir)
		if err != nil {
			return fmt.Errorf("connect to the server just started: %w", err)
		}
		return remoteCall(ctx, conn, dir, req, out, pr.update)
	}
	if op == "stop" || op == "umount" || op == "nbd.stop" {
		if a, ok := args.(umountArgs); ok {
			// No server: every mount of this repository is dead.
			// Nothing to open the repository for.
			res, err := clearDeadMount(dir, a.Mountpoint)
			if err == nil {
				err = decodeInto(res, out)
			}
			return err
		}
		if op == "stop" {
			// One may be shutting down on its own (its socket goes
			// first): stop returns once it is gone, as it does for a
			// server it stops.
			waitServerGone(ctx, dir)
			fmt.Fprintf(os.Stderr, "no strata server is running for %s\n", dir)
			return nil
		}
		return fail(exitError, "", "no strata server is running for %s", dir)
	}
	log := g.logger()
	repo, err := openRepository(ctx, g, log, spec.rebuildsIndex)
	if err != nil {
		return err
	}
	res, opErr := spec.fn(ctx, &opEnv{repo: repo, dir: wd, progress: pr.update}, raw)
	if err := repo.Close(); err != nil && opErr == nil {
		opErr = fmt.Errorf("close repository: %w", err)
	}
	if opErr != nil {
		return opErr
	}
	return decodeInto(res, out)
}

// decodeInto stores an operation's result res in out (nil: not wanted) as
// it would arrive over the socket.
func decodeInto(res, out any) error {
	if out == nil || res == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return json.Unmarshal(b, out)
}

// opPing answers at once: clients ask it when a long operation has been
// silent for a while (watchServer).
func opPing(context.Context, *opEnv, json.RawMessage) (any, error) {
	return struct {
		PID int `json:"pid"`
	}{os.Getpid()}, nil
}

// waitServerGone waits for a server that is shutting down to let go of the
// repository (its shutdown flushes, so it may take a while), so that what
// comes next does not find it half-gone.
func waitServerGone(ctx context.Context, dir string) {
	if pid := store.LockHolder(dir); pid != 0 && pid != os.Getpid() && isServer(pid) {
		waitExit(ctx, pid, shutdownTimeout+10*time.Second, func() {
			fmt.Fprintf(os.Stderr, "strata: waiting for the server (PID %d) to finish shutting down\n", pid)
		}, filepath.Join(dir, "server.log"))
	}
}

// isServer tells whether process pid is a strata server (not, say, a
// one-shot command holding the repository in its own process).
func isServer(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(b, []byte{0}) {
		if string(arg) == "serve" {
			return true
		}
	}
	return false
}
