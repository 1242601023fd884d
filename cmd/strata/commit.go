package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-backup/strata/layers"
)

type commitCmd struct {
	Volume    string   `arg:"" help:"Volume to commit."`
	Tag       []string `sep:"none" help:"Tags for the revision (comma separated or repeated)."`
	Message   string   `short:"m" help:"A note stored with the revision."`
	Time      string   `placeholder:"T" help:"Revision time (RFC 3339 or YYYY-MM-DD[ HH:MM:SS]); default now. For imports and tests."`
	Schedule  string   `placeholder:"S" help:"Tag the revision with every interval of schedule S that is due."`
	AllowLost bool     `help:"Commit even when a crash lost staging data: files of a file tree whose data was lost (they read as zeros; normally run the backup again first, which resends them), or blocks of a block volume written after the last flush and reverted to their earlier contents (rerun the whole copy, with nbdcopy --flush or dd conv=fsync, then commit with --allow-lost). For a block volume this also clears the condition, which stays until such a commit: strata cannot tell whether a copy rewrote every lost block."`
}

type commitArgs struct {
	Volume    string    `json:"volume"`
	Tags      []string  `json:"tags,omitempty"`
	Message   string    `json:"message,omitempty"`
	Time      time.Time `json:"time,omitempty"`
	Schedule  string    `json:"schedule,omitempty"`
	AllowLost bool      `json:"allow_lost,omitempty"`
}

func (c *commitCmd) Run(ctx context.Context, g *Globals) error {
	a := commitArgs{Volume: c.Volume, Message: c.Message, Schedule: c.Schedule, AllowLost: c.AllowLost}
	// Split here, not by kong (sep:","), which made --tag "" (an unset
	// variable in a script) no tag at all instead of an empty one.
	for _, list := range c.Tag {
		for _, t := range strings.Split(list, ",") {
			// "--tag 'daily, weekly'" means two tags, as it always did.
			t = strings.TrimSpace(t)
			if t == "" {
				return fail(exitUsage, tagHint, "--tag %q holds an empty tag", list)
			}
			// layers.Commit checks again (schedule tags too); here a
			// typo fails before the repository is unlocked.
			if err := layers.CheckTag(t); err != nil {
				return tagErr(err)
			}
			a.Tags = append(a.Tags, t)
		}
	}
	if c.Time != "" {
		t, err := parseTime(c.Time)
		if err != nil {
			return fail(exitUsage, "use RFC 3339 (2026-11-20T10:00:00Z) or YYYY-MM-DD[ HH:MM:SS] (UTC)", "--time: %v", err)
		}
		// A future time would make the revision "latest" and its age
		// negative until then, hiding missed backups from 'strata check'.
		if t.After(time.Now().Add(time.Minute)) {
			return fail(exitUsage, "--time says when the data was backed up (for imports of older backups); leave it out to use now", "--time %s is in the future", t.UTC().Format(time.RFC3339))
		}
		// The zero time (0001-01-01) is what "no --time" looks like on
		// the wire, so it was silently replaced by now. No backup is
		// older than 1970; before 1678 even the nanosecond times prune's
		// importance ranking compares wrap around.
		if t.Before(time.Unix(0, 0)) {
			return fail(exitUsage, "--time says when the data was backed up (for imports of older backups); leave it out to use now", "--time %s is before 1970-01-01, older than any backup can be", t.UTC().Format(time.RFC3339))
		}
		a.Time = t
	}
	var rev commitResult
	if err := call(ctx, g, "commit", a, &rev); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(commitJSON{revisionOut(rev.Revision), rev.Warnings, rev.OpenForWriting})
	}
	for _, w := range rev.Warnings {
		fmt.Fprintf(os.Stderr, "strata: warning: %s\n", w)
	}
	fmt.Println(rev.ID)
	tags := ""
	if len(rev.Tags) > 0 {
		tags = ", tags " + strings.Join(rev.Tags, ",")
	}
	files := ""
	if rev.Files > 0 {
		// Every inode (files, directories, links), as a tree's
		// "entries": calling them files made restore's count (regular
		// files) look like it had lost some.
		files = fmt.Sprintf("%d entries, ", rev.Files)
		if rev.Files == 1 {
			files = "1 entry, "
		}
	}
	fmt.Fprintf(os.Stderr, "committed %s@%s: %s%s, %s added, took %s%s\n", rev.Volume, rev.ID[:8], files, humanBytes(rev.Size), humanBytes(rev.Added), rev.Duration.Round(time.Second), tags)
	return nil
}

// commitResult is the new revision, with what the user should know about
// how it was taken.
type commitResult struct {
	layers.Revision
	Warnings []string `json:"warnings,omitempty"`
	// OpenForWriting counts the files of a file tree's staging that
	// were open for writing when the commit started.
	OpenForWriting int `json:"open_for_writing"`
}

// openFilesShown is how many files open for writing a commit warning
// names: enough to recognise a copy under way (rsync writes one file at
// a time), few enough for one line.
const openFilesShown = 3

// openFilesWarning says that the staging of vol, mounted at dir, had the
// files writing open for writing at the commit, naming the first few
// where their path is found.
func openFilesWarning(ctx context.Context, lr *layers.Repo, vol, dir string, writing []layers.Ino) string {
	var paths []string
	if st, err := lr.Staging(ctx, vol); err == nil {
		for _, ino := range writing[:min(len(writing), openFilesShown)] {
			// A file unlinked while open, or left only under another
			// hard link, has no path: it is counted, not named.
			if p, err := st.Tree().Path(ctx, ino); err == nil {
				paths = append(paths, filepath.Join(dir, p))
			}
		}
	}
	n := int64(len(writing))
	named := ""
	if len(paths) > 0 {
		named = " (" + strings.Join(paths, ", ")
		if more := n - int64(len(paths)); more > 0 {
			named += fmt.Sprintf(" and %d more", more)
		}
		named += ")"
	}
	return fmt.Sprintf("%s in the staging of %s %s open for writing at the commit%s: a copy into it may still be running, and the revision holds only what had been written by then; commit again once it has finished",
		count(n, "file"), vol, was(n), named)
}

func opCommit(ctx context.Context, env *opEnv, a commitArgs) (any, error) {
	tags := a.Tags
	if a.Schedule != "" {
		due, err := scheduleTags(ctx, env.repo, a.Volume, a.Schedule, a.Time)
		if err != nil {
			return nil, err
		}
		tags = append(tags, due...)
	}
	// Taken before the commit: files open for writing now are what the
	// revision may hold only part of.
	var stagingDir string
	var writing []layers.Ino
	if env.srv != nil {
		stagingDir, writing = env.srv.stagingWriters(a.Volume)
	}
	// An import of an older backup (--time) sorts among the revisions by
	// its time: the one that was latest stays latest.
	var newest layers.Revision
	if !a.Time.IsZero() {
		newest, _ = latestRevision(ctx, env.repo.layers, a.Volume)
	}
	rev, err := env.repo.layers.Commit(ctx, a.Volume, layers.CommitOptions{Time: a.Time, Tags: tags, Message: a.Message, AllowLost: a.AllowLost})
	var te *layers.TagError
	if errors.As(err, &te) {
		return nil, tagErr(te)
	}
	var lost *layers.LostDataError
	if errors.As(err, &lost) {
		hint := "run the backup into staging again: rsync sends those files anew (their mtime is 1970-01-01); or pass --allow-lost to commit them as they read now, as zeros"
		switch {
		case lost.Files == 0 && lost.Blocks == 0:
			hint = "staging may lack files written or changed just before the server stopped. Run the backup into staging again (rsync sends whatever the crash rolled back), then commit; writing staging again clears this. Or commit staging as it is now with --allow-lost"
		case lost.Files == 0:
			hint = "staging now mixes the new image with the old one. Rerun the whole copy (nbdcopy --flush, qemu-img convert, dd conv=fsync), then 'strata commit " + a.Volume +
				" --allow-lost'; or commit it as it reads now with --allow-lost"
		}
		return nil, &userError{msg: lost.Error(), code: exitError, hint: hint}
	}
	if err != nil {
		return nil, volumeErr(err, a.Volume)
	}
	// Commit made the revision durable in the journal; sealing puts it
	// under erasure coding too, so no single file or disk holds it alone.
	if err := env.repo.store.Seal(ctx); err != nil {
		return rev, fmt.Errorf("revision %s is committed, but erasure coding it failed (it is safe in the journal; the next commit or flush retries): %w", rev.ID, err)
	}
	res := commitResult{Revision: rev, OpenForWriting: len(writing)}
	if newest.ID != "" && rev.Time.Before(newest.Time) {
		layout := "2006-01-02 15:04:05"
		if rev.Time.Truncate(time.Second).Equal(newest.Time.Truncate(time.Second)) {
			layout += ".999999999" // the same second: show where they differ
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("--time %s is before the newest revision's (%s, %s): this revision sorts before it, and %s@latest still names that one",
			rev.Time.UTC().Format(layout), newest.ID[:8], newest.Time.UTC().Format(layout), a.Volume))
	}
	if len(writing) > 0 {
		res.Warnings = append(res.Warnings, openFilesWarning(ctx, env.repo.layers, a.Volume, stagingDir, writing))
	}
	if env.srv != nil {
		// A copy still running (or one whose client is still connected)
		// makes a revision of whatever it had written by now.
		if n := env.srv.stagingClients(a.Volume); n > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s to the staging of %s %s open at the commit: if a copy was still running, the revision holds only what it had written by then (see 'strata status')",
				count(int64(n), "NBD connection"), a.Volume, was(int64(n))))
		}
	}
	return res, nil
}

// tagHint says what a tag may be.
const tagHint = "a tag is a name like daily, pre-upgrade or v1.2 that NAME@TAG can name; nothing was committed"

// tagErr turns a *layers.TagError (err) into the user's error.
func tagErr(err error) error {
	return &userError{msg: err.Error(), hint: tagHint, code: exitUsage, err: err, quiet: true}
}

// parseTime reads --time in the forms revision specs take (layers.ParseTime).
func parseTime(s string) (time.Time, error) {
	if t, _, ok := layers.ParseTime(s); ok {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot read %q as a time", s)
}
