package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
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
}

type wireMessage struct {
	Progress *progress       `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *wireError      `json:"error,omitempty"`
	Done     bool            `json:"done,omitempty"`
}

type wireError struct {
	Msg  string `json:"msg"`
	Hint string `json:"hint,omitempty"`
	Code int    `json:"code,omitempty"`
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

// remoteCall runs op on the server behind conn.
func remoteCall(ctx context.Context, conn net.Conn, req wireRequest, out any, onProgress func(progress)) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("send request to server: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var m wireMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("decode server reply: %w", err)
		}
		if m.Progress != nil && onProgress != nil {
			onProgress(*m.Progress)
		}
		if m.Error != nil {
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
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read from server: %w", err)
	}
	return errors.New("server closed the connection before answering (see REPO/server.log)")
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
