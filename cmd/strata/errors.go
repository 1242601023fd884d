package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// Exit codes scripts can branch on (restic uses the same idea).
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitNoRepository = 10
	exitLocked       = 11
	exitWrongKey     = 12
	exitInterrupted  = 130
)

// userError is an error whose message is written for the user, with an
// optional hint saying what to do, kept apart from the wrapped cause.
type userError struct {
	msg  string
	hint string
	code int
	err  error
	// quiet: msg says all err would; err stays for errors.Is.
	quiet bool
}

func (e *userError) Error() string {
	if e.err != nil && !e.quiet {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *userError) Unwrap() error { return e.err }

// fail builds a userError.
func fail(code int, hint string, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), hint: hint, code: code}
}

// report prints err (if any) with its hint and returns the exit code: the
// one place where errors become exit codes.
func report(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitStatus
	if errors.As(err, &ee) {
		return ee.code // already printed (e.g. strata check)
	}
	code := exitCodeOf(err)
	var ue *userError
	if !errors.As(err, &ue) && errors.Is(err, context.Canceled) {
		// Ctrl-C or SIGTERM: "context canceled" would read like a fault.
		fmt.Fprintln(w, "strata: interrupted")
		fmt.Fprintln(w, "hint: nothing already stored was lost; run the command again to finish it (restore goes on where it stopped)")
		return code
	}
	fmt.Fprintf(w, "strata: %v\n", err)
	if ue != nil && ue.hint != "" {
		fmt.Fprintf(w, "hint: %s\n", ue.hint)
	}
	if errors.Is(err, syscall.ENOSPC) {
		fmt.Fprintln(w, "hint: a shard or spool filesystem is full; free space there and retry — nothing already committed was changed")
	}
	return code
}

// exitStatus ends the process with code after output was already written.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCodeOf maps an error to the process exit code.
func exitCodeOf(err error) int {
	var ue *userError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue) && ue.code != 0:
		return ue.code
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

// jsonErrors turns what report writes into one JSON object per line on
// w, for --json: {"error": "..."} for the error (its lines joined) and
// {"hint": "..."} for each hint, beside the {"progress": ...} lines long
// commands print there, so a script reads stderr as JSON too. report
// writes each of them in one call.
type jsonErrors struct{ w io.Writer }

func (j jsonErrors) Write(p []byte) (int, error) {
	text := strings.TrimRight(string(p), "\n")
	key, msg := "error", strings.TrimPrefix(text, "strata: ")
	if h, ok := strings.CutPrefix(text, "hint: "); ok {
		key, msg = "hint", h
	}
	b, err := json.Marshal(map[string]string{key: msg})
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(j.w, "%s\n", b); err != nil {
		return 0, err
	}
	return len(p), nil
}
