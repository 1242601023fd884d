package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/index"
	"github.com/strata-backup/strata/store/key"
)

// An escrow copy is the master key and the repository id in one OpenPGP
// message that stock gpg opens, kept offline. Export writes it; import
// turns it back into a key entry, which is how a repository whose REPO/keys
// was lost becomes readable again.

type keyExportCmd struct {
	Escrow               string   `required:"" type:"path" placeholder:"FILE" help:"Write the armored OpenPGP escrow message here ('-' for stdout); 'strata key import --escrow FILE' restores from it."`
	Recipient            []string `type:"existingfile" placeholder:"KEY.asc" help:"Encrypt the escrow copy to these public keys (else to a passphrase)."`
	EscrowPassphraseFile string   `type:"existingfile" placeholder:"FILE" help:"Passphrase for the escrow copy (else STRATA_ESCROW_PASSPHRASE, or asked twice)."`
}

func (c *keyExportCmd) Run(ctx context.Context, g *Globals) error {
	_, m, id, err := g.unlockedRing()
	if err != nil {
		return err
	}
	var pass []byte
	var pubs io.Reader
	if len(c.Recipient) > 0 {
		if pubs, err = readRecipients(c.Recipient); err != nil {
			return err
		}
	} else if pass, err = escrowPassphrase(c.EscrowPassphraseFile, true,
		"give --escrow-passphrase-file FILE or set STRATA_ESCROW_PASSPHRASE (or --recipient KEY.asc to encrypt the copy to a public key)"); err != nil {
		return err
	}
	out := os.Stdout
	if c.Escrow != "-" {
		f, err := os.OpenFile(c.Escrow, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fail(exitError, "choose a new file name", "create escrow file: %v", err)
		}
		defer f.Close()
		out = f
	}
	err = key.ExportEscrow(out, m, id, pass, pubs)
	if err == nil && c.Escrow != "-" {
		err = out.Sync()
	}
	if err != nil {
		if c.Escrow != "-" {
			// A half-written escrow copy must not be mistaken for one.
			os.Remove(c.Escrow)
		}
		if errors.Is(err, key.ErrBadKey) {
			return &userError{msg: "export escrow: " + err.Error(), hint: "pass an armored OpenPGP public key with an encryption subkey (gpg --export --armor KEYID)", code: exitUsage, err: err, quiet: true}
		}
		return fmt.Errorf("export escrow: %w", err)
	}
	if c.Escrow != "-" {
		fmt.Fprintf(os.Stderr, "wrote escrow copy to %s; 'gpg --decrypt %s' opens it, 'strata key import --escrow %s' restores access with it\n", c.Escrow, c.Escrow, c.Escrow)
	}
	return nil
}

type keyImportCmd struct {
	Escrow               string   `required:"" type:"existingfile" placeholder:"FILE" help:"The escrow copy 'strata key export --escrow' wrote."`
	EscrowPassphraseFile string   `type:"existingfile" placeholder:"FILE" help:"Passphrase of the escrow copy (else STRATA_ESCROW_PASSPHRASE, or asked); a copy encrypted to a public key opens with --identity instead."`
	Recipient            []string `type:"existingfile" placeholder:"KEY.asc" help:"Wrap the restored master key to these armored OpenPGP public keys instead of a new passphrase."`
	NewPassphraseFile    string   `type:"existingfile" placeholder:"FILE" help:"Read the new passphrase from FILE (else STRATA_NEW_PASSPHRASE, or asked)."`
	Label                string   `default:"escrow import" help:"A note to tell entries apart."`
}

// Run needs no credential of the repository: the escrow copy is one. It
// works with REPO/keys missing or empty, and only ever adds an entry.
func (c *keyImportCmd) Run(ctx context.Context, g *Globals) error {
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	r, id, err := g.ring()
	if err != nil {
		return err
	}
	msg, err := os.ReadFile(c.Escrow)
	if err != nil {
		return fail(exitUsage, "", "read escrow copy: %v", err)
	}
	var creds key.Credentials
	if g.Identity != "" {
		kc, err := g.keyCredentials(dir)
		if err != nil {
			return err
		}
		creds.Identity, creds.IdentityPassphrase = kc.Identity, kc.IdentityPassphrase
	}
	if c.EscrowPassphraseFile != "" || os.Getenv("STRATA_ESCROW_PASSPHRASE") != "" || g.Identity == "" {
		creds.Passphrase, err = escrowPassphrase(c.EscrowPassphraseFile, false,
			"give --escrow-passphrase-file FILE or set STRATA_ESCROW_PASSPHRASE (an escrow copy encrypted to a public key opens with --identity KEY.asc)")
		if err != nil {
			return err
		}
	}
	m, repoID, err := key.LoadEscrow(bytes.NewReader(msg), creds)
	if err != nil {
		return escrowErr(err, c.Escrow, creds)
	}

	// Make sure the key is this repository's before writing anything: the
	// id the copy names, then the index, which only the right key opens.
	if repoID != "" && repoID != id {
		return fail(exitWrongKey, "use the escrow copy made for this repository, or point --repo at the repository it belongs to",
			"%s is the escrow copy of repository %s, not of this one (%s); nothing was changed", c.Escrow, repoID, id)
	}
	checked := false
	switch err := store.CheckKey(dir, crypt.NewKeys([32]byte(m))); {
	case err == nil:
		checked = true
	case errors.Is(err, index.ErrWrongKey):
		return &userError{msg: fmt.Sprintf("the master key in %s does not open this repository's index; nothing was changed", c.Escrow), hint: "the escrow copy is damaged or not this repository's; use another one", code: exitWrongKey, err: err}
	case errors.Is(err, index.ErrNoIndex):
		g.logger().Info("no index to check the escrow key against", "dir", dir)
	default:
		return fmt.Errorf("check the escrow key against the index: %w", err)
	}
	existing, err := r.List()
	if err != nil {
		return err
	}
	if repoID == "" && !checked && len(existing) == 0 {
		return fail(exitWrongKey, "use an escrow copy from 'strata key export --escrow'", "%s names no repository and there is neither an index nor a key entry to check its key against; nothing was changed", c.Escrow)
	}
	e, err := addEntry(r, m, c.Recipient, c.NewPassphraseFile, c.Label)
	if errors.Is(err, key.ErrMasterMismatch) {
		return &userError{msg: fmt.Sprintf("the master key in %s is not the one this repository's key entries hold; nothing was changed", c.Escrow), hint: "the escrow copy is not this repository's; 'strata key list' shows the entries", code: exitWrongKey, err: err}
	}
	if err != nil {
		return err
	}
	fmt.Printf("imported escrow copy %s as key entry %s (%s)\n", c.Escrow, e.ID, e.Kind)
	return nil
}

// escrowErr explains why an escrow copy did not open.
func escrowErr(err error, file string, c key.Credentials) error {
	var le *key.IdentityLockedError
	switch {
	case errors.As(err, &le):
		return unlockErr(err)
	case len(c.Passphrase) > 0 && errors.Is(err, key.ErrWrongPassphrase):
		return &userError{msg: fmt.Sprintf("wrong escrow passphrase: it does not open %s; nothing was changed", file), hint: "give the passphrase chosen at 'strata key export --escrow' in STRATA_ESCROW_PASSPHRASE or --escrow-passphrase-file; a copy encrypted to a public key opens with --identity KEY.asc", code: exitWrongKey, err: err, quiet: true}
	case errors.Is(err, key.ErrNoMatchingKey):
		return &userError{msg: fmt.Sprintf("the identity does not open %s: the copy is not encrypted to it; nothing was changed", file), hint: "use the secret key of a public key given to 'strata key export --recipient', or the escrow passphrase", code: exitWrongKey, err: err, quiet: true}
	case errors.Is(err, key.ErrCorrupt):
		return &userError{msg: fmt.Sprintf("%s is not a strata escrow copy or is damaged; nothing was changed", file), hint: "give the file 'strata key export --escrow' wrote", code: exitError, err: err}
	}
	return fmt.Errorf("open escrow copy %s: %w", file, err)
}

// escrowPassphrase reads the escrow copy's passphrase from file,
// STRATA_ESCROW_PASSPHRASE or the terminal (twice when confirm). It is kept
// apart from STRATA_PASSPHRASE and STRATA_NEW_PASSPHRASE on purpose: an
// escrow copy lives offline under its own passphrase.
func escrowPassphrase(file string, confirm bool, hint string) ([]byte, error) {
	return passphraseFrom{file: file, env: "STRATA_ESCROW_PASSPHRASE",
		prompt: "Passphrase for the escrow copy: ", confirm: confirm,
		missing: "no passphrase for the escrow copy", hint: hint}.read()
}
