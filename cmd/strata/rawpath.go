package main

import (
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// File names are bytes, and Linux trees hold names that are not UTF-8
// (legacy Latin-1 ones, say). encoding/json turns such bytes into U+FFFD,
// so a path crossing the control socket or printed with --json next to a
// "path" also travels as raw bytes (base64 in JSON) when it is not valid
// UTF-8, and text output escapes what a terminal would misread or obey.

// rawArg returns the command-line argument kong parsed into s: kong hands
// on an argument that is not UTF-8 with U+FFFD for each bad byte, which
// names no file. s itself when no argument matches.
func rawArg(s string) string {
	if !strings.ContainsRune(s, utf8.RuneError) {
		return s
	}
	for _, a := range os.Args[1:] {
		if a != s && string([]rune(a)) == s {
			return a
		}
	}
	return s
}

// rawIfInvalid returns p's bytes when JSON cannot carry p as it is.
func rawIfInvalid(p string) []byte {
	if utf8.ValidString(p) {
		return nil
	}
	return []byte(p)
}

// orRaw is the path a message carried: raw when it came with one.
func orRaw(p string, raw []byte) string {
	if raw != nil {
		return string(raw)
	}
	return p
}

// showPath quotes what a terminal must not get raw in a path: bytes that
// are not UTF-8 as \xNN, control and other unprintable characters as
// \xNN or \uNNNN (a name holding ESC [31m would otherwise recolour the
// screen), and the backslash itself, so every output names one path (as
// ls -b does).
func showPath(p string) string {
	clean := true
	for _, r := range p {
		if r == utf8.RuneError || r == '\\' || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, p[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(p[i : i+n])
		}
		i += n
	}
	return b.String()
}
