package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/strata-backup/strata/store/key"
)

// Key commands work on REPO/keys directly: they never touch data, so they
// run in this process even while a server holds the repository.
type keyCmd struct {
	List   keyListCmd   `cmd:"" help:"List the entries that can unlock the repository."`
	Add    keyAddCmd    `cmd:"" help:"Add a passphrase (default) or OpenPGP public keys (--recipient)."`
	Remove keyRemoveCmd `cmd:"" help:"Remove an entry by id or unique id prefix (never the last one; needs a credential that unlocks)."`
	Passwd keyPasswdCmd `cmd:"" help:"Change the current passphrase on every entry it opens; no data is re-encrypted."`
	Export keyExportCmd `cmd:"" help:"Write an escrow copy of the master key that stock gpg opens."`
	Import keyImportCmd `cmd:"" help:"Restore access from an escrow copy: add an entry with a new passphrase (or --recipient), e.g. after REPO/keys was lost."`
}

func (g *Globals) ring() (*key.Ring, string, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, "", err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, "", err
	}
	r, err := key.OpenRing(filepath.Join(dir, "keys"))
	return r, cfg.ID, err
}

// keyCredentials gathers the global credentials for the ring: a passphrase
// given with --identity is the identity's own passphrase as well.
func (g *Globals) keyCredentials(dir string) (key.Credentials, error) {
	c, err := g.credentials(dir)
	if err != nil {
		return key.Credentials{}, err
	}
	return key.Credentials{Passphrase: c.passphrase, Identity: c.identity, IdentityPassphrase: c.passphrase}, nil
}

type keyListCmd struct{}

func (c *keyListCmd) Run(ctx context.Context, g *Globals) error {
	r, _, err := g.ring()
	if err != nil {
		return err
	}
	ents, err := r.List()
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(ents)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tLABEL\tCREATED\tRECIPIENTS")
	for _, e := range ents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.ID, e.Kind, e.Label, e.Created.UTC().Format("2006-01-02 15:04"), strings.Join(e.Recipients, ","))
	}
	return tw.Flush()
}

type keyAddCmd struct {
	Recipient         []string `type:"existingfile" placeholder:"KEY.asc" help:"Wrap to these armored OpenPGP public keys instead of a new passphrase."`
	Label             string   `help:"A note to tell entries apart."`
	NewPassphraseFile string   `type:"existingfile" placeholder:"FILE" help:"Read the new passphrase from FILE (else STRATA_NEW_PASSPHRASE, or asked)."`
}

func (c *keyAddCmd) Run(ctx context.Context, g *Globals) error {
	r, m, _, err := g.unlockedRing()
	if err != nil {
		return err
	}
	e, err := addEntry(r, m, c.Recipient, c.NewPassphraseFile, c.Label)
	if err != nil {
		return err
	}
	fmt.Printf("added key entry %s (%s)\n", e.ID, e.Kind)
	return nil
}

// readRecipients reads armored public key files, one after another.
func readRecipients(paths []string) (io.Reader, error) {
	var keys []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read recipient key: %w", err)
		}
		keys = append(append(keys, b...), '\n')
	}
	return bytes.NewReader(keys), nil
}

// addEntry adds an entry for m: to the public keys in recipients if any,
// else to a new passphrase from newPassFile, STRATA_NEW_PASSPHRASE or the
// terminal.
func addEntry(r *key.Ring, m key.Master, recipients []string, newPassFile, label string) (key.Entry, error) {
	var (
		e   key.Entry
		err error
	)
	if len(recipients) > 0 {
		var keys io.Reader
		if keys, err = readRecipients(recipients); err != nil {
			return e, err
		}
		e, err = r.AddRecipients(m, keys, label)
	} else {
		var pass []byte
		if pass, err = newPassphraseFrom(newPassFile, "the new key entry"); err != nil {
			return e, err
		}
		e, err = r.AddPassphrase(m, pass, label)
	}
	var de *key.DuplicateError
	switch {
	case errors.As(err, &de) && len(de.Fingerprints) > 0:
		return e, &userError{msg: de.Error() + "; nothing was added", hint: "'strata key list' shows the entries; a key is added once", code: exitUsage, err: err, quiet: true}
	case errors.As(err, &de):
		return e, &userError{msg: de.Error() + "; nothing was added", hint: "choose another passphrase ('strata key passwd' changes the one an entry has)", code: exitUsage, err: err, quiet: true}
	case errors.Is(err, key.ErrBadKey):
		return e, &userError{msg: "add key: " + err.Error(), hint: "pass an armored OpenPGP public key with an encryption subkey (gpg --export --armor KEYID)", code: exitUsage, err: err, quiet: true}
	case err != nil:
		return e, fmt.Errorf("add key: %w", err)
	}
	return e, nil
}

type keyRemoveCmd struct {
	ID    string `arg:"" help:"Entry id, or a unique prefix of it, from 'strata key list'."`
	Force bool   `help:"Remove the entry even if it is the only one the given passphrase or identity opens (another entry must remain)."`
}

func (c *keyRemoveCmd) Run(ctx context.Context, g *Globals) error {
	r, repoID, err := g.ring()
	if err != nil {
		return err
	}
	// The id first: a mistyped one costs no unlock (nor a prompt).
	target, err := resolveEntry(r, c.ID)
	if err != nil {
		return err
	}
	// Only someone who can unlock the repository may take a way in away.
	creds, err := g.keyCredentials(repoID)
	if err != nil {
		return err
	}
	_, mine, err := r.Opening(creds)
	if err != nil {
		return unlockErr(err)
	}
	all, err := r.List()
	if err != nil {
		return err
	}
	if len(all) == 1 {
		return lastKeyErr(target.ID)
	}
	if len(mine) == 1 && mine[0].ID == target.ID && !c.Force {
		return fail(exitError, "run it with another entry's passphrase or identity, or add --force once you are sure another entry's credential is at hand ('strata key list' shows them)",
			"key entry %s is the only one the given %s opens: after removing it, that %s no longer unlocks the repository; nothing was removed", target.ID, credentialWord(creds), credentialWord(creds))
	}
	if err := r.Remove(target.ID); err != nil {
		if errors.Is(err, key.ErrLastKey) {
			return lastKeyErr(target.ID)
		}
		return fmt.Errorf("remove key %s: %w", target.ID, err)
	}
	fmt.Printf("removed key entry %s (%s)\n", target.ID, target.Kind)
	return nil
}

func lastKeyErr(id string) error {
	return fail(exitError, "add another entry first ('strata key add')", "refusing to remove the last key entry %s: the repository would be unreadable", id)
}

// resolveEntry finds the entry an id or unique id prefix names, with an
// error that lists the candidates.
func resolveEntry(r *key.Ring, id string) (key.Entry, error) {
	e, err := r.Resolve(id)
	var ae *key.AmbiguousError
	switch {
	case errors.As(err, &ae):
		return e, &userError{msg: ae.Error(), hint: "give more digits of the id", code: exitUsage, err: err, quiet: true}
	case errors.Is(err, key.ErrNotFound):
		all, lerr := r.List()
		if lerr != nil {
			return e, lerr
		}
		var ids []string
		for _, x := range all {
			ids = append(ids, x.ID+" ("+x.Kind+")")
		}
		return e, &userError{msg: fmt.Sprintf("no key entry has id or id prefix %q", id), hint: "the entries are: " + strings.Join(ids, ", "), code: exitUsage, err: err, quiet: true}
	}
	return e, err
}

func credentialWord(c key.Credentials) string {
	switch {
	case len(c.Identity) > 0 && len(c.Passphrase) > 0:
		return "passphrase or identity"
	case len(c.Identity) > 0:
		return "identity"
	}
	return "passphrase"
}

type keyPasswdCmd struct {
	NewPassphraseFile string `type:"existingfile" placeholder:"FILE" help:"Read the new passphrase from FILE (else STRATA_NEW_PASSPHRASE, or asked)."`
}

func (c *keyPasswdCmd) Run(ctx context.Context, g *Globals) error {
	r, dir, err := g.ring()
	if err != nil {
		return err
	}
	creds, err := g.credentials(dir)
	if err != nil {
		return err
	}
	if len(creds.passphrase) == 0 {
		// Only --identity was given: it opens a recipients entry, which
		// has no passphrase to change.
		return fail(exitUsage, "give the current passphrase in STRATA_PASSPHRASE or --passphrase-file; to give the repository a passphrase with your identity, run 'strata --identity KEY.asc key add'",
			"key passwd changes a passphrase and needs the current one; --identity opens a recipients entry, which has none")
	}
	// Check the current passphrase before asking for a new one.
	if _, _, err := r.Opening(key.Credentials{Passphrase: creds.passphrase}); err != nil {
		return unlockErr(err)
	}
	pass, err := newPassphraseFrom(c.NewPassphraseFile, "the repository")
	if err != nil {
		return err
	}
	if bytes.Equal(pass, creds.passphrase) {
		return fail(exitUsage, "choose a different passphrase", "the new passphrase is the current one; nothing was changed")
	}
	changed, err := r.ChangePassphrase(key.Credentials{Passphrase: creds.passphrase}, pass)
	var de *key.DuplicateError
	switch {
	case errors.As(err, &de):
		return &userError{msg: fmt.Sprintf("the new passphrase already opens key entry %s; nothing was changed", strings.Join(de.IDs, ",")), hint: "choose another passphrase, or remove the entries you no longer need ('strata key remove')", code: exitUsage, err: err, quiet: true}
	case err != nil && len(changed) > 0:
		return fmt.Errorf("changed entry %s, then: %w (the others still open with the old passphrase; run key passwd again)", strings.Join(key.IDs(changed), ", "), err)
	case err != nil:
		return unlockErr(err)
	}
	fmt.Printf("changed the passphrase of key entry %s; no data was re-encrypted\n", strings.Join(key.IDs(changed), ", "))
	return nil
}

// unlockedRing opens the repository's key ring and unlocks it with the
// user's credentials; it also returns the repository id.
func (g *Globals) unlockedRing() (*key.Ring, key.Master, string, error) {
	r, id, err := g.ring()
	if err != nil {
		return nil, key.Master{}, "", err
	}
	m, err := unlockRing(g, r, id)
	return r, m, id, err
}

// unlockRing unlocks r with the global credentials (asked for, if need be,
// naming repository id).
func unlockRing(g *Globals, r *key.Ring, id string) (key.Master, error) {
	c, err := g.keyCredentials(id)
	if err != nil {
		return key.Master{}, err
	}
	m, _, err := r.Unlock(c)
	if err != nil {
		return m, unlockErr(err)
	}
	return m, nil
}

func unlockErr(err error) error {
	var le *key.IdentityLockedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le) && !le.Given:
		return &userError{msg: fmt.Sprintf("the identity's secret key %s is passphrase-protected and no passphrase for it was given", le.Fingerprint), hint: "give its passphrase in STRATA_PASSPHRASE or --passphrase-file", code: exitWrongKey, err: err, quiet: true}
	case errors.As(err, &le):
		return &userError{msg: fmt.Sprintf("the passphrase given does not unlock the identity's secret key %s (nor any passphrase entry)", le.Fingerprint), hint: "STRATA_PASSPHRASE or --passphrase-file must hold the identity's passphrase", code: exitWrongKey, err: err, quiet: true}
	case errors.Is(err, key.ErrNoKeys):
		return &userError{msg: "the repository has no key entries (REPO/keys is empty or missing)", hint: "restore REPO/keys from a backup, or run 'strata key import --escrow FILE' with an escrow copy", code: exitWrongKey, err: err, quiet: true}
	case errors.Is(err, key.ErrWrongPassphrase):
		return &userError{msg: "wrong passphrase: no key entry of this repository opens with it", hint: "'strata key list' shows the entries; check STRATA_PASSPHRASE or --passphrase-file", code: exitWrongKey, err: err, quiet: true}
	case errors.Is(err, key.ErrNoMatchingKey):
		return &userError{msg: "the identity does not match any recipient of this repository", hint: "'strata key list' shows the recipients' fingerprints", code: exitWrongKey, err: err, quiet: true}
	}
	return fmt.Errorf("unlock repository: %w", err)
}

// newPassphraseFrom reads a new passphrase from file, STRATA_NEW_PASSPHRASE,
// or asks twice.
func newPassphraseFrom(file, what string) ([]byte, error) {
	return passphraseFrom{file: file, env: "STRATA_NEW_PASSPHRASE",
		prompt: fmt.Sprintf("New passphrase for %s: ", what), confirm: true,
		missing: "no new passphrase", hint: "give --new-passphrase-file FILE or STRATA_NEW_PASSPHRASE"}.read()
}
