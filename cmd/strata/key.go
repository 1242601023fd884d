package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/key"
)

// Key commands work on REPO/keys directly: they never touch data, so they
// run in this process even while a server holds the repository.
type keyCmd struct {
	List   keyListCmd   `cmd:"" help:"List the entries that can unlock the repository."`
	Add    keyAddCmd    `cmd:"" help:"Add a passphrase (default) or OpenPGP public keys (--recipient)."`
	Remove keyRemoveCmd `cmd:"" help:"Remove an entry (never the last one)."`
	Passwd keyPasswdCmd `cmd:"" help:"Change the passphrase that unlocks now; no data is re-encrypted."`
	Export keyExportCmd `cmd:"" help:"Write an escrow copy of the master key that stock gpg opens."`
}

func (g *Globals) ring() (*key.Ring, string, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, "", err
	}
	cfg, err := format.Load(dir)
	if err != nil {
		return nil, "", &userError{msg: fmt.Sprintf("%s is not a strata repository", dir), code: exitNoRepository, err: err}
	}
	r, err := key.OpenRing(filepath.Join(dir, "keys"))
	return r, cfg.ID, err
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
	NewPassphraseFile string   `type:"existingfile" placeholder:"FILE" help:"Read the new passphrase from FILE instead of asking."`
}

func (c *keyAddCmd) Run(ctx context.Context, g *Globals) error {
	r, dir, err := g.ring()
	if err != nil {
		return err
	}
	m, err := unlockRing(g, r, dir)
	if err != nil {
		return err
	}
	var e key.Entry
	if len(c.Recipient) > 0 {
		var keys []byte
		for _, p := range c.Recipient {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			keys = append(append(keys, b...), '\n')
		}
		e, err = r.AddRecipients(m, strings.NewReader(string(keys)), c.Label)
	} else {
		var pass []byte
		pass, err = newPassphraseFrom(c.NewPassphraseFile, "the new key entry")
		if err != nil {
			return err
		}
		e, err = r.AddPassphrase(m, pass, c.Label)
	}
	if err != nil {
		return fmt.Errorf("add key: %w", err)
	}
	fmt.Printf("added key entry %s (%s)\n", e.ID, e.Kind)
	return nil
}

type keyRemoveCmd struct {
	ID string `arg:"" help:"Entry id from 'strata key list'."`
}

func (c *keyRemoveCmd) Run(ctx context.Context, g *Globals) error {
	r, _, err := g.ring()
	if err != nil {
		return err
	}
	if err := r.Remove(c.ID); err != nil {
		if err == key.ErrLastKey {
			return fail(exitError, "add another entry first ('strata key add')", "refusing to remove the last key entry: the repository would be unreadable")
		}
		return fmt.Errorf("remove key %s: %w", c.ID, err)
	}
	fmt.Printf("removed key entry %s\n", c.ID)
	return nil
}

type keyPasswdCmd struct {
	NewPassphraseFile string `type:"existingfile" placeholder:"FILE" help:"Read the new passphrase from FILE instead of asking."`
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
	pass, err := newPassphraseFrom(c.NewPassphraseFile, "the repository")
	if err != nil {
		return err
	}
	err = r.ChangePassphrase(key.Credentials{Passphrase: creds.passphrase}, pass)
	if err != nil {
		return unlockErr(err)
	}
	fmt.Println("passphrase changed; no data was re-encrypted")
	return nil
}

type keyExportCmd struct {
	Escrow               string   `required:"" type:"path" placeholder:"FILE" help:"Write the armored OpenPGP escrow message here ('-' for stdout)."`
	Recipient            []string `type:"existingfile" placeholder:"KEY.asc" help:"Encrypt the escrow copy to these public keys (else to a passphrase)."`
	EscrowPassphraseFile string   `type:"existingfile" placeholder:"FILE" help:"Passphrase for the escrow copy (else asked, or STRATA_ESCROW_PASSPHRASE)."`
}

func (c *keyExportCmd) Run(ctx context.Context, g *Globals) error {
	r, id, err := g.ring()
	if err != nil {
		return err
	}
	m, err := unlockRing(g, r, id)
	if err != nil {
		return err
	}
	var pass []byte
	var pubs *strings.Reader
	if len(c.Recipient) > 0 {
		var all []byte
		for _, p := range c.Recipient {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			all = append(append(all, b...), '\n')
		}
		pubs = strings.NewReader(string(all))
	} else if v := os.Getenv("STRATA_ESCROW_PASSPHRASE"); v != "" && c.EscrowPassphraseFile == "" {
		pass = []byte(v)
	} else if pass, err = newPassphraseFrom(c.EscrowPassphraseFile, "the escrow copy"); err != nil {
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
	var pr = pubs
	if pr == nil {
		err = key.ExportEscrow(out, m, id, pass, nil)
	} else {
		err = key.ExportEscrow(out, m, id, nil, pr)
	}
	if err != nil {
		return fmt.Errorf("export escrow: %w", err)
	}
	if c.Escrow != "-" {
		if err := out.Sync(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote escrow copy to %s; 'gpg --decrypt %s' opens it\n", c.Escrow, c.Escrow)
	}
	return nil
}

// unlockRing unlocks with the global credentials.
func unlockRing(g *Globals, r *key.Ring, dir string) (key.Master, error) {
	c, err := g.credentials(dir)
	if err != nil {
		return key.Master{}, err
	}
	m, _, err := r.Unlock(key.Credentials{Passphrase: c.passphrase, Identity: c.identity, IdentityPassphrase: c.passphrase})
	if err != nil {
		return m, unlockErr(err)
	}
	return m, nil
}

func unlockErr(err error) error {
	switch {
	case err == nil:
		return nil
	case err == key.ErrWrongPassphrase || strings.Contains(err.Error(), key.ErrWrongPassphrase.Error()):
		return &userError{msg: "wrong passphrase: no key entry of this repository opens with it", hint: "'strata key list' shows the entries; check STRATA_PASSPHRASE or --passphrase-file", code: exitWrongKey}
	case err == key.ErrNoMatchingKey || strings.Contains(err.Error(), key.ErrNoMatchingKey.Error()):
		return &userError{msg: "the identity does not match any recipient of this repository", hint: "'strata key list' shows the recipients' fingerprints", code: exitWrongKey}
	}
	return fmt.Errorf("unlock repository: %w", err)
}

// newPassphraseFrom reads a new passphrase from file, or asks twice.
func newPassphraseFrom(file, what string) ([]byte, error) {
	var g Globals
	g.PassphraseFile = file
	if file == "" {
		if v := os.Getenv("STRATA_NEW_PASSPHRASE"); v != "" {
			return []byte(v), nil
		}
		// Only the terminal: STRATA_PASSPHRASE is the current passphrase here.
		p1, err := prompt(fmt.Sprintf("New passphrase for %s: ", what))
		if err != nil {
			return nil, fail(exitUsage, "give --new-passphrase-file FILE or STRATA_NEW_PASSPHRASE", "no new passphrase")
		}
		p2, err := prompt("Repeat passphrase: ")
		if err != nil {
			return nil, err
		}
		if string(p1) != string(p2) || len(p1) == 0 {
			return nil, fail(exitUsage, "", "passphrases are empty or do not match")
		}
		return p1, nil
	}
	return g.newPassphrase(what)
}
