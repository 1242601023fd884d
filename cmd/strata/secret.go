package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// credentials gathers what unlocks the repository, in the order the user
// expects: --identity, --passphrase-file, STRATA_PASSPHRASE, a passphrase
// handed over by a parent strata, then a terminal prompt.
type credentials struct {
	passphrase []byte
	identity   []byte // armored OpenPGP secret key
}

func (g *Globals) credentials(purpose string) (credentials, error) {
	// Asked once per process: a command waiting for the lock retries.
	if g.creds != nil {
		return *g.creds, nil
	}
	c, err := g.readCredentials(purpose)
	if err == nil {
		g.creds = &c
	}
	return c, err
}

func (g *Globals) readCredentials(purpose string) (credentials, error) {
	var c credentials
	if g.Identity != "" {
		b, err := os.ReadFile(g.Identity)
		if err != nil {
			return c, fail(exitWrongKey, "pass an armored OpenPGP secret key (gpg --export-secret-keys --armor)", "read identity %s: %v", g.Identity, err)
		}
		c.identity = b
		// A passphrase, if given too, unlocks a protected secret key.
	}
	switch {
	case g.PassphraseFD >= 0:
		f := os.NewFile(uintptr(g.PassphraseFD), "passphrase")
		b, err := readAllClose(f)
		if err != nil {
			return c, fmt.Errorf("read passphrase from parent: %w", err)
		}
		c.passphrase = b
	case g.PassphraseFile != "":
		b, err := os.ReadFile(g.PassphraseFile)
		if err != nil {
			return c, fail(exitWrongKey, "", "read passphrase file: %v", err)
		}
		c.passphrase = bytes.TrimRight(b, "\r\n")
	case os.Getenv("STRATA_PASSPHRASE") != "":
		c.passphrase = []byte(os.Getenv("STRATA_PASSPHRASE"))
	case c.identity == nil:
		p, err := prompt(fmt.Sprintf("Passphrase for %s: ", purpose))
		if err != nil {
			return c, err
		}
		c.passphrase = p
	}
	return c, nil
}

// newPassphrase asks for a new passphrase (twice on a terminal) unless one
// was given by file or environment.
func (g *Globals) newPassphrase(what string) ([]byte, error) {
	return passphraseFrom{file: g.PassphraseFile, env: "STRATA_PASSPHRASE",
		prompt: fmt.Sprintf("New passphrase for %s: ", what), confirm: true}.read()
}

// passphraseFrom says where a passphrase comes from: the file if one is
// named, else the environment variable, else the terminal.
type passphraseFrom struct {
	file    string
	env     string
	prompt  string // what the terminal asks
	confirm bool   // ask twice on the terminal, to rule out a typo
	// missing and hint, if set, are the error when there is no terminal
	// to ask on (otherwise errNoTerminal, which is about unlocking).
	missing, hint string
}

func (p passphraseFrom) read() ([]byte, error) {
	if p.file != "" {
		b, err := os.ReadFile(p.file)
		if err != nil {
			return nil, fail(exitUsage, "", "read passphrase file: %v", err)
		}
		// A file written with echo ends in a newline that is no part of it.
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fail(exitUsage, "", "passphrase file %s is empty", p.file)
		}
		return b, nil
	}
	if v := os.Getenv(p.env); v != "" {
		return []byte(v), nil
	}
	if p.missing != "" && !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, fail(exitUsage, p.hint, "%s", p.missing)
	}
	return askPassphrase(p.prompt, p.confirm)
}

// askPassphrase asks on the terminal for a passphrase that must not be
// empty, and with confirm a second time to rule out a typo.
func askPassphrase(label string, confirm bool) ([]byte, error) {
	p1, err := prompt(label)
	if err != nil {
		return nil, err
	}
	if len(p1) == 0 {
		return nil, fail(exitUsage, "", "empty passphrase")
	}
	if !confirm {
		return p1, nil
	}
	p2, err := prompt("Repeat passphrase: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p1, p2) {
		return nil, fail(exitUsage, "", "passphrases do not match")
	}
	return p1, nil
}

var errNoTerminal = errors.New("no passphrase: set STRATA_PASSPHRASE, use --passphrase-file or --identity, or run on a terminal")

func prompt(msg string) ([]byte, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, &userError{msg: errNoTerminal.Error(), code: exitWrongKey}
	}
	fmt.Fprint(os.Stderr, msg)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

func readAllClose(f *os.File) ([]byte, error) {
	defer f.Close()
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

// A client of a running server needs no credential: the server holds the
// key, and its socket is the user's alone. But a credential the client was
// given must still be right, or a cron job with a broken passphrase passes
// for as long as a server runs and fails only after the next reboot. The
// client sends a hash of the passphrase it was given (never the passphrase);
// the server compares it with the hash of the one that unlocked it, and when
// they differ (another key entry's passphrase, or a wrong one) the client
// checks the passphrase against the key ring itself.

// credHash is what a client sends for passphrase p.
func credHash(p []byte) string {
	h := sha256.Sum256(append([]byte("strata control socket credential v1\x00"), p...))
	return hex.EncodeToString(h[:])
}

// givenCredHash is credHash of the passphrase the user gave without being
// asked (--passphrase-file, STRATA_PASSPHRASE), "" when none: a command
// that a server answers does not prompt.
func (g *Globals) givenCredHash(dir string) (string, error) {
	if g.PassphraseFile == "" && os.Getenv("STRATA_PASSPHRASE") == "" {
		return "", nil
	}
	c, err := g.credentials(dir)
	if err != nil || len(c.passphrase) == 0 {
		return "", err
	}
	return credHash(c.passphrase), nil
}

// credCache is what a server knows of passphrases: hashes (credHash) that
// unlock, each with the time REPO/keys had when that was known. A change
// of the key ring (key passwd, key remove) makes them all unknown again,
// so a passphrase just retired is refused, and the next client checks its
// own against the ring.
type credCache struct {
	keys string // REPO/keys

	mu    sync.Mutex
	known map[string]time.Time // guarded by mu
}

func newCredCache(dir, unlocked string) *credCache {
	c := &credCache{keys: filepath.Join(dir, "keys"), known: map[string]time.Time{}}
	if unlocked != "" {
		c.known[unlocked] = c.stamp()
	}
	return c
}

// stamp is the key ring's modification time: entries are written by
// rename, which changes it.
func (c *credCache) stamp() time.Time {
	fi, err := os.Stat(c.keys)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// accept tells whether hash is a passphrase known to unlock the ring as
// it is now. checked: the client has just unlocked the ring with it
// itself (the socket lets in only this user, who needs no passphrase
// here at all), so it is known from now on.
func (c *credCache) accept(hash string, checked bool) bool {
	now := c.stamp()
	c.mu.Lock()
	defer c.mu.Unlock()
	if checked {
		c.known[hash] = now
		return true
	}
	t, ok := c.known[hash]
	return ok && t.Equal(now)
}
