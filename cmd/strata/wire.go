package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/strata-backup/strata/store"
)

// The control socket speaks newline-delimited JSON: the client sends one
// request, the server answers with any number of progress messages and one
// final message carrying the result or the error. Closing the connection
// cancels the operation.

type wireRequest struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
	// Dir is the client's working directory, so relative paths in Args
	// mean what the user meant.
	Dir string `json:"dir,omitempty"`
	// Cred is credHash of the passphrase the client was given, if any.
	Cred string `json:"cred,omitempty"`
	// CredChecked: the client unlocked the key ring with that passphrase
	// itself, after the server did not know it.
	CredChecked bool `json:"cred_checked,omitempty"`
}

type wireMessage struct {
	Progress *progress       `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *wireError      `json:"error,omitempty"`
	Done     bool            `json:"done,omitempty"`
}

// errServerGone means the server went away without taking the request:
// it was exiting (an on-demand server whose last mount went, a stop) or
// it died. call tries again once, where the repository then is.
var errServerGone = errors.New("the server went away before it took the request")

// errCredUnknown is a server's answer to a Cred it does not know.
var errCredUnknown = errors.New("the server does not know the passphrase given")

type wireError struct {
	Msg  string `json:"msg"`
	Hint string `json:"hint,omitempty"`
	Code int    `json:"code,omitempty"`
	// CredUnknown: the request's Cred is not the passphrase that
	// unlocked the server; the client checks it against the key ring.
	CredUnknown bool `json:"cred_unknown,omitempty"`
	// Retry: the server is exiting and did not take the request.
	Retry bool `json:"retry,omitempty"`
}

// progress is one line of progress for long work.
type progress struct {
	Phase string `json:"phase"`
	Done  int64  `json:"done"`
	Total int64  `json:"total,omitempty"`
	Unit  string `json:"unit,omitempty"` // "bytes" or "" (items)
	Note  string `json:"note,omitempty"`
}

func socketPath(dir string) string { return filepath.Join(dir, "strata.sock") }

// dialServer connects to a running server, or fails fast.
func dialServer(dir string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	return d.Dial("unix", socketPath(dir))
}

// remoteCall runs op on the server of repository dir behind conn.
func remoteCall(ctx context.Context, conn net.Conn, dir string, req wireRequest, out any, onProgress func(progress)) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("send request to server: %w", err)
	}
	var heard atomic.Int64 // Unix ns of the last message
	heard.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var deaf atomic.Bool
	defer close(done)
	go watchServer(dir, &heard, done, func() { deaf.Store(true); conn.Close() })
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	heardAny := false
	for sc.Scan() {
		heardAny = true
		heard.Store(time.Now().UnixNano())
		var m wireMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("decode server reply: %w", err)
		}
		if m.Progress != nil && onProgress != nil {
			onProgress(*m.Progress)
		}
		if m.Error != nil {
			if m.Error.CredUnknown {
				return errCredUnknown
			}
			if m.Error.Retry {
				return errServerGone
			}
			return &userError{msg: m.Error.Msg, hint: m.Error.Hint, code: m.Error.Code}
		}
		if m.Done {
			if out != nil && len(m.Result) > 0 {
				if err := json.Unmarshal(m.Result, out); err != nil {
					return fmt.Errorf("decode result: %w", err)
				}
			}
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if deaf.Load() {
		pid := store.LockHolder(dir)
		return fail(exitError, fmt.Sprintf("if it is stuck, end it with 'kill %d' ('kill -9 %d' if it was stopped with SIGSTOP or does not react): what it acknowledged is durable, and the next command starts afresh", pid, pid),
			"the strata server (PID %d) does not answer", pid)
	}
	if !heardAny {
		// Not one message: the request was not taken, or the server
		// died before it could say anything.
		return errServerGone
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read from server: %w", err)
	}
	return errors.New("server closed the connection before answering (see REPO/server.log)")
}

// How long a client waits without a message before it asks the server, on
// a second connection, whether it still answers, and how long it waits for
// that answer. A long operation may send nothing for a while; a stopped or
// wedged server would otherwise keep its clients waiting forever.
const (
	pingAfter   = 15 * time.Second
	pingTimeout = 10 * time.Second
)

// watchServer calls dead if the server of dir stops answering pings while
// nothing was heard (heard, Unix ns) for pingAfter, until done closes.
// STRATA_TEST_PING_AFTER shortens pingAfter for tests.
func watchServer(dir string, heard *atomic.Int64, done <-chan struct{}, dead func()) {
	after := pingAfter
	if d, err := time.ParseDuration(os.Getenv("STRATA_TEST_PING_AFTER")); err == nil {
		after = d
	}
	t := time.NewTicker(after / 2)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, heard.Load())) < after {
			continue
		}
		if err := ping(dir, pingTimeout); err != nil {
			select {
			case <-done:
			default:
				dead()
			}
			return
		}
		heard.Store(time.Now().UnixNano())
	}
}

// ping asks the server of dir for any answer within timeout.
func ping(dir string, timeout time.Duration) error {
	conn, err := dialServer(dir)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(conn).Encode(wireRequest{Op: "ping"}); err != nil {
		return err
	}
	_, err = bufio.NewReader(conn).ReadBytes('\n')
	return err
}

// toWireError keeps the user-facing parts of err.
func toWireError(err error) *wireError {
	var ue *userError
	if errors.As(err, &ue) {
		msg := ue.Error()
		return &wireError{Msg: msg, Hint: ue.hint, Code: ue.code}
	}
	return &wireError{Msg: err.Error(), Code: exitCodeOf(err)}
}
