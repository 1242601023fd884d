package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/key"
)

type initCmd struct {
	Shards    string   `default:"4+2" placeholder:"K+M" help:"Erasure coding: K data + M parity shards per segment; any M shard dirs may be lost."`
	ShardDir  []string `type:"path" placeholder:"DIR" help:"A shard directory (one failure domain, e.g. one disk); give exactly K+M, or none for REPO/shards/0..K+M-1."`
	Recipient []string `type:"existingfile" placeholder:"KEY.asc" help:"Also wrap the master key to this OpenPGP public key (escrow, offline recovery); repeatable."`
}

func (c *initCmd) Run(ctx context.Context, g *Globals) (retErr error) {
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	k, m, err := parseShards(c.Shards)
	if err != nil {
		return err
	}
	if len(c.ShardDir) != 0 && len(c.ShardDir) != k+m {
		return fail(exitUsage, fmt.Sprintf("give --shard-dir %d times (one per shard), or not at all", k+m), "--shards %d+%d needs %d shard dirs, got %d", k, m, k+m, len(c.ShardDir))
	}
	if _, err := format.Load(dir); err == nil {
		return fail(exitError, "use it as it is, or choose another --repo", "%s is already a strata repository", dir)
	} else if !errors.Is(err, format.ErrNotRepository) {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fail(exitError, "init needs a new or empty directory", "%s exists and is not empty", dir)
	}
	var pass []byte
	if len(c.Recipient) == 0 || g.PassphraseFile != "" || os.Getenv("STRATA_PASSPHRASE") != "" {
		if pass, err = g.newPassphrase(dir); err != nil {
			return err
		}
	}
	id := make([]byte, 16)
	rand.Read(id)
	cfg := format.Config{
		Version: format.Version, ID: hex.EncodeToString(id), Created: time.Now().UTC(),
		DataShards: k, ParityShards: m, ShardDirs: c.ShardDir,
	}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fail(exitUsage, "", "repository config: %v", err)
	}
	// A failed init takes back what it made, so running it again (with
	// the cause fixed) does not meet a half-made repository.
	undo := planUndo(dir, cfg.ShardPaths(dir))
	created := false
	defer func() {
		if retErr != nil && !created {
			undo.run(g.logger())
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, bareErr(err))
	}
	master, err := key.NewMaster()
	if err != nil {
		return err
	}
	ring, err := key.OpenRing(filepath.Join(dir, "keys"))
	if err != nil {
		return err
	}
	if pass != nil {
		if _, err := ring.AddPassphrase(master, pass, "init"); err != nil {
			return fmt.Errorf("wrap master key: %w", err)
		}
	}
	var recipients []string
	for _, r := range c.Recipient {
		e, err := addEntry(ring, master, []string{r}, "", filepath.Base(r))
		if err != nil {
			return err
		}
		recipients = append(recipients, e.Recipients...)
	}
	// Keys first, config last: a directory without config.json is not a
	// repository yet.
	if err := store.Create(ctx, dir, cfg); err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	created = true // a failure to print must not take a finished repository back
	if g.JSON {
		return printJSON(cfg)
	}
	fmt.Printf("created strata repository %s at %s\n", cfg.ID[:8], dir)
	fmt.Printf("erasure coding %d+%d: any %d of %d shard dirs may be lost\n", k, m, m, k+m)
	for i, p := range cfg.ShardPaths(dir) {
		fmt.Printf("  shard %d: %s\n", i, p)
	}
	if pass != nil {
		fmt.Println("Keep the passphrase safe: without it (or a recipient's secret key) the data cannot be read.")
	} else {
		fmt.Printf("Keep the secret key of %s safe: without it the data cannot be read.\n", strings.Join(recipients, ", "))
	}
	fmt.Println("'strata key export --escrow FILE' writes a recovery copy that gpg can open.")
	return nil
}

// parseShards reads "K+M".
func parseShards(s string) (k, m int, err error) {
	a, b, ok := strings.Cut(s, "+")
	k, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || k < 1 || m < 0 || k+m > 64 {
		return 0, 0, fail(exitUsage, "e.g. --shards 4+2 (4 data + 2 parity: survives losing any 2 shard dirs)", "bad --shards %q", s)
	}
	return k, m, nil
}

// initUndo is what a failed init removes: only what it created.
type initUndo struct {
	repo     string   // new or empty before init: its contents are init's
	madeDirs []string // directories missing before init, deepest first
}

// planUndo notes, before init creates anything, which of the repository
// directory, its parents and the shard directories do not exist yet.
func planUndo(repo string, shardDirs []string) *initUndo {
	u := &initUndo{repo: repo}
	for _, p := range append([]string{repo}, shardDirs...) {
		for d := p; ; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil || !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
				break
			}
			if !slices.Contains(u.madeDirs, d) {
				u.madeDirs = append(u.madeDirs, d)
			}
		}
	}
	// Deepest first, so each directory is empty when its turn comes.
	slices.SortStableFunc(u.madeDirs, func(a, b string) int {
		return strings.Count(b, string(filepath.Separator)) - strings.Count(a, string(filepath.Separator))
	})
	return u
}

// run removes what init made. Inside the repository directory everything
// is init's (it was new or empty); elsewhere only directories init made
// are removed, and only while empty, so nothing that was there before is
// ever touched.
func (u *initUndo) run(log *slog.Logger) {
	ents, _ := os.ReadDir(u.repo)
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(u.repo, e.Name())); err != nil {
			log.Warn("clean up after failed init", "path", filepath.Join(u.repo, e.Name()), "err", err)
		}
	}
	// The repository directory too, if init made it: it is among these.
	for _, d := range u.madeDirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("clean up after failed init", "path", d, "err", err)
		}
	}
}
