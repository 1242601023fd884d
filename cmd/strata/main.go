// Command strata keeps backups as live mounts: rsync or dd into a staging
// mount or NBD device, commit, and mount or serve any revision read-only.
//
// Every command is a client of one repository server. If a server answers
// on REPO/strata.sock the command runs there; otherwise one-shot commands
// open the repository in this process and long-lived ones (mount, nbd
// serve) start a server in the background first.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
)

// cli is the whole command line. One file per command holds its struct.
type cli struct {
	Globals

	Init      initCmd      `cmd:"" help:"Create a repository."`
	Key       keyCmd       `cmd:"" help:"Manage the passphrases and public keys that unlock the repository."`
	Volume    volumeCmd    `cmd:"" help:"Create, list and remove volumes."`
	Mount     mountCmd     `cmd:"" help:"Mount staging (read-write), a revision (read-only) or every revision (--all)."`
	Umount    umountCmd    `cmd:"" help:"Unmount a strata mount, flushing everything written to it."`
	Commit    commitCmd    `cmd:"" help:"Turn a volume's staging area into an immutable revision."`
	List      listCmd      `cmd:"" help:"List revisions."`
	Diff      diffCmd      `cmd:"" help:"Show what changed between two revisions."`
	Restore   restoreCmd   `cmd:"" help:"Copy a revision (or a path in it) out to a directory, file or stdout."`
	Nbd       nbdCmd       `cmd:"" name:"nbd" help:"Serve block volumes over NBD."`
	Prune     pruneCmd     `cmd:"" help:"Remove revisions by retention policy and give the space back. Without any policy it removes nothing and only gives back the space of revisions and volumes already removed."`
	Protect   protectCmd   `cmd:"" help:"Protect a revision from prune."`
	Unprotect unprotectCmd `cmd:"" help:"Remove a revision's protection from prune."`
	Scrub     scrubCmd     `cmd:"" help:"Verify shards and chunks; --repair restores lost redundancy."`
	Repair    repairCmd    `cmd:"" help:"Rebuild the index from the shards alone (--rebuild-index), or recount chunk references (--recount-references); one of the two."`
	Check     checkCmd     `cmd:"" help:"Monitoring check: Nagios-style line and exit code 0/1/2/3."`
	Status    statusCmd    `cmd:"" help:"Volumes, mounts, exports and repository health."`
	Serve     serveCmd     `cmd:"" help:"Run the repository server in the foreground (for systemd). SIGTERM or SIGINT stops it as 'strata stop' does, except that a busy mount (a loop device or process holds it) does not make it refuse: it flushes, logs what holds the mount, serves on and exits once the mount is released; a second SIGTERM or SIGINT tears busy mounts down and exits."`
	Stop      stopCmd      `cmd:"" help:"Stop the repository server: flush, unmount everything, exit. Returns once the server has exited and released the repository. Refuses, naming the holder, while a mount is busy (say a filesystem loop-mounted from a staging disk.img): tearing it down would lose that filesystem's unwritten data. The server then keeps serving; see --force."`
	Guard     guardCmd     `cmd:"" hidden:"" help:"Started by the server: aborts its FUSE connections if it dies mid-request."`
}

// Globals are the options every command takes.
type Globals struct {
	Repo           string        `env:"STRATA_REPO" placeholder:"DIR" help:"Repository directory (env STRATA_REPO)."`
	PassphraseFile string        `type:"path" placeholder:"FILE" help:"Read the passphrase from FILE (or set STRATA_PASSPHRASE). Not needed while a server runs (it holds the unlocked key, and its socket only lets in this user), but one given must still unlock the repository."`
	Identity       string        `type:"path" placeholder:"KEY.asc" help:"Unlock with an OpenPGP secret key instead of a passphrase."`
	JSON           bool          `name:"json" help:"Print results as JSON."`
	Verbose        int           `short:"v" type:"counter" help:"More logging (-v, -vv)."`
	LockWait       time.Duration `name:"lock-wait" default:"30s" placeholder:"DURATION" help:"How long to wait for a repository another strata holds before giving up (0: fail at once)."`

	// passphraseFD is how a parent strata hands the passphrase to the
	// background server it starts, so it never appears in argv or env.
	PassphraseFD int `hidden:"" default:"-1"`

	creds *credentials // what unlocked the repository, once asked
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var c cli
	os.Args = optionalValues(os.Args)
	k := kong.Parse(&c,
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Name("strata"),
		kong.Description("Backups as live mounts: rsync or dd into staging, commit, mount or serve any revision."),
		// A mistyped flag gets the command's one-line usage, not its
		// whole help, and our usage exit code instead of kong's 80.
		kong.ShortUsageOnError(),
		kong.Exit(func(code int) {
			if code == kongUsageError {
				code = exitUsage
			}
			os.Exit(code)
		}),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	err := k.Run(&c.Globals)
	stop()
	w := io.Writer(os.Stderr)
	if c.Globals.JSON {
		w = jsonErrors{os.Stderr}
	}
	os.Exit(report(w, err))
}

// kongUsageError is the exit code kong gives parse errors.
const kongUsageError = 80

// optionalValues gives flags whose value is optional their default when
// they stand alone (kong has no optional flag values): a bare --read-data
// means all of it.
func optionalValues(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "--read-data" {
			a = "--read-data=100"
		}
		out[i] = a
	}
	return out
}
