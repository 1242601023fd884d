package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunker"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
	"github.com/strata-backup/strata/store/index"
	"github.com/strata-backup/strata/store/key"
)

// repository is a repository opened in this process: the store holding the
// badger lock and the layers model on top of it.
type repository struct {
	dir    string
	cfg    format.Config
	store  *store.Store
	layers *layers.Repo
	log    *slog.Logger
	// credHash is credHash of the passphrase that unlocked the
	// repository ("" for an identity without one).
	credHash string
}

// repoDir returns the absolute repository directory or a usage error.
func (g *Globals) repoDir() (string, error) {
	if g.Repo == "" {
		return "", fail(exitUsage, "pass --repo DIR or set STRATA_REPO", "no repository given")
	}
	return filepath.Abs(g.Repo)
}

func (g *Globals) logger() *slog.Logger {
	level := slog.LevelWarn
	switch {
	case g.Verbose >= 2:
		level = slog.LevelDebug
	case g.Verbose == 1:
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// loadConfig reads the repository's configuration, with messages for a
// directory that is no repository or one made by a newer strata.
func loadConfig(dir string) (format.Config, error) {
	cfg, err := format.Load(dir)
	if err != nil {
		var ve *format.VersionError
		switch {
		case errors.Is(err, format.ErrNotRepository), errors.Is(err, syscall.ENOTDIR):
			return cfg, &userError{msg: fmt.Sprintf("%s is not a strata repository", dir), hint: "create one with 'strata init --repo " + dir + "'", code: exitNoRepository, err: err}
		case errors.As(err, &ve):
			return cfg, &userError{msg: "repository format is newer than this strata", hint: "upgrade strata; nothing was changed", code: exitError, err: err}
		}
		return cfg, fmt.Errorf("load repository config: %w", err)
	}
	return cfg, nil
}

// openRepository unlocks and opens the repository in this process.
// rebuild is for 'repair --rebuild-index': a damaged index is set aside
// for the rebuild to replace, where otherwise it stops everything.
func openRepository(ctx context.Context, g *Globals, log *slog.Logger, rebuild bool) (*repository, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	master, err := unlock(g, dir)
	if err != nil {
		return nil, err
	}
	keys := crypt.NewKeys([32]byte(master))
	st, err := store.Open(ctx, dir, cfg, keys, store.Options{Logger: log, SetAsideDamagedIndex: rebuild})
	if err != nil {
		var le *store.LockedError
		var de *index.DamagedError
		if errors.As(err, &de) {
			return nil, &userError{
				msg:  fmt.Sprintf("the repository's index at %s is damaged: %s", de.Dir, strings.Join(de.Tables, "; ")),
				hint: "run 'strata repair --rebuild-index': it rebuilds the index from the shards and keeps the damaged one beside it as index.damaged-TIME; the shards are not changed",
				code: exitError, err: err, quiet: true,
			}
		}
		if errors.As(err, &le) {
			return nil, &userError{msg: "repository is in use", hint: fmt.Sprintf("another strata (PID %d) holds it; if it is a server, its socket should answer — check 'strata status', or stop it with 'strata stop'", le.PID), code: exitLocked, err: err}
		}
		return nil, fmt.Errorf("open store: %w", err)
	}
	lr, err := layers.Open(ctx, st.DB(), st, layers.Options{Logger: log, SpoolDir: filepath.Join(dir, "spool"), Chunker: chunker.Params(cfg.Chunker)})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("open volumes: %w", err)
	}
	repo := &repository{dir: dir, cfg: cfg, store: st, layers: lr, log: log}
	if c, err := g.credentials(dir); err == nil && len(c.passphrase) > 0 {
		repo.credHash = credHash(c.passphrase)
	}
	return repo, nil
}

// unlock finds the master key with whatever credentials the user gave.
func unlock(g *Globals, dir string) (key.Master, error) {
	ring, err := key.OpenRing(filepath.Join(dir, "keys"))
	if err != nil {
		return key.Master{}, fmt.Errorf("open key ring: %w", err)
	}
	return unlockRing(g, ring, dir)
}

// Close flushes and closes everything.
func (r *repository) Close() error {
	err := r.layers.Close()
	if e := r.store.Close(); err == nil {
		err = e
	}
	return err
}

func now() time.Time { return time.Now() }
