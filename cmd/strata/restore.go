package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
)

type restoreCmd struct {
	Target   string `arg:"" help:"NAME@REV[:PATH] — a revision, or a path inside an fs revision."`
	Dest     string `arg:"" help:"fs volumes: a directory (created if missing); a :PATH naming a file goes into DEST if DEST is a directory, else becomes DEST, as with cp. Files already there with the same size and mtime are kept (a rerun resumes). An entry of another type than the revision's is replaced, except a non-empty directory, which is reported as a conflict and left alone; symlinks inside DEST are replaced, never followed. '-' writes one file (NAME@REV:PATH) to standard output, as restic dump. Block volumes: the whole image (no :PATH) to a file (sparse; removed again if the restore fails), a device (at least the volume's size, checked before anything is written) or '-' for stdout; not a directory."`
	Checksum bool   `name:"checksum" help:"Read the files already in DEST that match the revision's in size and mtime, compare their content and rewrite those that differ (as rsync --checksum). Without it they are kept unread: fast, but a file damaged or altered with its mtime kept (bit rot, tampering) stays wrong. Reads all of them in full; fs volumes only."`
}

type restoreArgs struct {
	Volume string `json:"volume"`
	Rev    string `json:"rev"`
	Path   string `json:"path,omitempty"`
	Dest   string `json:"dest"`
	// PathRaw and DestRaw carry Path and Dest when they are not UTF-8
	// (rawpath.go).
	PathRaw []byte `json:"path_raw,omitempty"`
	DestRaw []byte `json:"dest_raw,omitempty"`
	// Stdout: Dest is a FIFO the client copies to its standard output.
	Stdout bool `json:"stdout,omitempty"`
	// Checksum: compare the content of files kept by size and mtime.
	Checksum bool `json:"checksum,omitempty"`
}

type restoreResult struct {
	Revision string `json:"revision"`
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
	Skipped  int64  `json:"skipped"` // already present and identical (resumed), kept
	// Rewritten counts files already present that differed (size, mtime
	// or, with --checksum, content) and were written again.
	Rewritten int64 `json:"rewritten"`
	// Unreadable counts files whose data is damaged beyond what parity
	// restores; Damaged names the first maxDamagedListed of them. The
	// restore goes on past them: everything else is worth having.
	Unreadable int64    `json:"unreadable,omitempty"`
	Damaged    []string `json:"damaged,omitempty"`
	// Problems counts what could not be restored as in the revision
	// (conflicts with DEST, xattrs the filesystem cannot hold, ...);
	// ProblemList describes the first maxProblemsListed. The restore
	// goes on past them too.
	Problems    int64            `json:"problems,omitempty"`
	ProblemList []restoreProblem `json:"problem_list,omitempty"`
}

// maxDamagedListed bounds the paths a restore reports as unreadable.
const maxDamagedListed = 1000

func (c *restoreCmd) Run(ctx context.Context, g *Globals) error {
	c.Target, c.Dest = rawArg(c.Target), rawArg(c.Dest)
	vol, rev, p := splitTarget(c.Target)
	if rev == "" {
		rev = "latest"
	}
	a := restoreArgs{Volume: vol, Rev: rev, Path: p, Dest: c.Dest, Checksum: c.Checksum}
	if strings.TrimSpace(c.Dest) == "" {
		// filepath.Abs("") is the working directory: a script with an
		// unset $DEST, run from /, would restore over the live system.
		return fail(exitUsage, "name the directory to restore into ('.' for the current one)", "restore: DEST is empty")
	}
	a.PathRaw = rawIfInvalid(a.Path)
	if c.Dest == "-" {
		return restoreToStdout(ctx, g, a)
	}
	abs, err := filepath.Abs(c.Dest)
	if err != nil {
		return err
	}
	a.Dest = abs
	a.DestRaw = rawIfInvalid(a.Dest)
	var res restoreResult
	if err := call(ctx, g, "restore", a, &res); err != nil {
		return err
	}
	if g.JSON {
		if err := printJSON(res); err != nil {
			return err
		}
	} else {
		printRestoreSummary(vol, a.Dest, c.Checksum, res)
	}
	return restoreOutcome(a.Dest, res, g.JSON)
}

// printRestoreSummary tells what a tree restore did, and what went wrong
// (the first 20 of each).
func printRestoreSummary(vol, dest string, checksum bool, res restoreResult) {
	fmt.Fprintf(os.Stderr, "restored %s@%s to %s: %s, %s", vol, res.Revision[:8], dest, count(res.Files, "file"), humanBytes(res.Bytes))
	var already []string
	if res.Skipped > 0 {
		how := "same size and mtime"
		if checksum {
			how = "same content"
		}
		already = append(already, fmt.Sprintf("%d kept as already there (%s)", res.Skipped, how))
	}
	if res.Rewritten > 0 {
		already = append(already, fmt.Sprintf("%d rewritten as they differed", res.Rewritten))
	}
	if len(already) > 0 {
		fmt.Fprintf(os.Stderr, " (%s)", strings.Join(already, ", "))
	}
	fmt.Fprintln(os.Stderr)
	for i, p := range res.Damaged {
		if i == 20 {
			fmt.Fprintf(os.Stderr, "  ... and %d more unreadable\n", res.Unreadable-20)
			break
		}
		fmt.Fprintf(os.Stderr, "  unreadable: %s\n", p)
	}
	for i, p := range res.ProblemList {
		if i == 20 {
			fmt.Fprintf(os.Stderr, "  ... and %d more problems\n", res.Problems-20)
			break
		}
		fmt.Fprintf(os.Stderr, "  %s: %s\n", p.Kind, p.Message)
	}
}

// restoreOutcome is the error (and exit code) for a tree restore that went
// through but left things out: unreadable files, problems at DEST.
func restoreOutcome(dest string, res restoreResult, json bool) error {
	if res.Unreadable == 0 && res.Problems == 0 {
		return nil
	}
	var msgs, hints []string
	if res.Unreadable > 0 {
		msgs = append(msgs, fmt.Sprintf("%s could not be read and %s left out", count(res.Unreadable, "file"), was(res.Unreadable)))
		hints = append(hints, "the repository is damaged beyond its parity there: bring back missing shard dirs if you can ('strata scrub' tells which), else take those files from another copy")
	}
	if res.Problems > 0 {
		where := "listed above"
		if json {
			where = "see problem_list"
		}
		msgs = append(msgs, fmt.Sprintf("the restore to %s is incomplete: %s (%s)", dest, count(res.Problems, "problem"), where))
		kinds := map[string]bool{}
		for _, p := range res.ProblemList {
			kinds[p.Kind] = true
		}
		if kinds[problemConflict] {
			hints = append(hints, "a non-empty directory in DEST stands where the revision has a file: move it away (restore never deletes one) and run the same restore again")
		}
		if kinds[problemXattr] {
			hints = append(hints, "the destination filesystem cannot hold some extended attributes: restore to one that can (XFS, or ext4 made with 'mkfs.ext4 -O ea_inode', takes values up to 64 KiB), or go without them")
		}
		if kinds[problemACL] {
			hints = append(hints, "the destination filesystem takes no POSIX ACLs: restore to one that does (ext4, XFS, btrfs mounted with acl) to keep them")
		}
		if kinds[problemPermission] {
			hints = append(hints, "trusted.* and security.* attributes (file capabilities, SELinux labels) need root: run the restore as root, or go without them")
		}
		if kinds[problemError] {
			hints = append(hints, "fix what the messages name and run the same restore again")
		}
		if kinds[problemConflict] || kinds[problemError] {
			hints = append(hints, "a rerun keeps what is already restored")
		}
	}
	return fail(exitError, strings.Join(hints, "; "), "%s", strings.Join(msgs, "; "))
}

// restoreToStdout has the restore write into a FIFO that this process
// copies to its standard output: the restore may run in a server (one
// serving NBD or mounts), which cannot write to our stdout.
func restoreToStdout(ctx context.Context, g *Globals, a restoreArgs) error {
	dir, err := os.MkdirTemp("", "strata-restore-")
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	defer os.RemoveAll(dir)
	fifo := filepath.Join(dir, "stdout")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	// Our read end first, so the restore's open does not block; then a
	// write end held until the restore returned, so the copy reads EOF
	// only after the restore's writes, not before they start.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	defer r.Close()
	w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("restore to stdout: %w", err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(os.Stdout, r)
		if err != nil {
			// Stdout went away (| head): with no reader left the
			// restore's next write fails instead of blocking.
			r.Close()
		}
		copied <- err
	}()
	a.Dest, a.Stdout = fifo, true
	var res restoreResult
	callErr := call(ctx, g, "restore", a, &res)
	w.Close()
	copyErr := <-copied
	if copyErr != nil {
		return fmt.Errorf("write stdout: %w", copyErr)
	}
	if callErr != nil {
		return callErr
	}
	if g.JSON {
		return json.NewEncoder(os.Stderr).Encode(res)
	}
	return nil
}

func opRestore(ctx context.Context, env *opEnv, a restoreArgs) (any, error) {
	a.Path, a.Dest = orRaw(a.Path, a.PathRaw), orRaw(a.Dest, a.DestRaw)
	lr := env.repo.layers
	info, err := lr.Volume(ctx, a.Volume)
	if err != nil {
		return nil, volumeErr(err, a.Volume)
	}
	r, err := resolve(ctx, lr, a.Volume, a.Rev)
	if err != nil {
		return nil, err
	}
	res := restoreResult{Revision: r.ID}
	if info.Type == layers.TypeBlock && a.Path != "" {
		return nil, fail(exitUsage, "restore the whole image (strata restore "+a.Volume+"@"+a.Rev+" FILE), or mount the revision and loop-mount its disk.img to copy files", "%s is a block volume: it has no paths (%q)", a.Volume, a.Path)
	}
	if a.Checksum && info.Type == layers.TypeBlock {
		return nil, fail(exitUsage, "leave out --checksum: a block restore always writes the whole image", "--checksum compares files of a file tree; %s is a block volume", a.Volume)
	}
	if a.Stdout && info.Type != layers.TypeBlock && a.Path == "" {
		return nil, fail(exitUsage, "name one file (strata restore "+a.Volume+"@"+a.Rev+":PATH -), or restore the tree to a directory", "'-' (standard output) takes one file of a file tree, or a block volume's disk image")
	}
	if info.Type == layers.TypeBlock {
		d, err := lr.RevisionDisk(ctx, a.Volume, r.ID)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		name := a.Dest
		if a.Stdout {
			name = "standard output"
		}
		n, err := restoreDisk(ctx, d, a.Dest, name, a.Volume+"@"+a.Rev, env.progress)
		res.Bytes, res.Files = n, 1
		return res, err
	}
	t, err := lr.Snapshot(ctx, a.Volume, r.ID)
	if err != nil {
		return nil, err
	}
	rs := &treeRestorer{t: t, checksum: a.Checksum, progress: env.progress, links: map[layers.Ino]string{}, total: r.Size}
	if a.Stdout {
		f, err := os.OpenFile(a.Dest, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("restore to standard output: %w", err)
		}
		err = rs.stream(ctx, a.Path, f)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("restore to standard output: %w", cerr)
		}
		res.Files, res.Bytes = rs.files, rs.bytes
		return res, err
	}
	err = rs.restore(ctx, a.Path, a.Dest)
	res.Files, res.Bytes, res.Skipped, res.Rewritten = rs.files, rs.bytes, rs.skipped, rs.rewritten
	res.Unreadable, res.Damaged = rs.unreadable, rs.damaged
	res.Problems, res.ProblemList = rs.problems, rs.problemList
	return res, err
}

// restoreDisk copies a block revision (what names it: vm@first) to dest
// (a file, device or FIFO; name is what messages call it). Holes are
// skipped (seeked over) on files, so the copy stays sparse; devices and
// FIFOs get zeros. A device too small for the image is refused before
// anything is written; a file this call created goes again if the
// restore fails, as a partial image is no use.
func restoreDisk(ctx context.Context, d *layers.Disk, dest, name, what string, prog func(progress)) (n int64, err error) {
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		return 0, fail(exitUsage, "give a file or device to write the image to, e.g. "+filepath.Join(dest, "disk.img"),
			"%s is a directory; %s is a disk image", dest, what)
	}
	created := true
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, iofs.ErrExist) {
		created = false
		f, err = os.OpenFile(dest, os.O_WRONLY, 0)
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", name, bareErr(err))
	}
	defer f.Close()
	if created {
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(dest)
			}
		}()
	}
	writeErr := func(op string, err error) error {
		if hint := destHint(err); hint != "" {
			hint += "; nothing in the repository changed"
			if created {
				hint += " (the partial image was removed)"
			}
			return fail(exitError, hint, "%s %s: %v", op, name, bareErr(err))
		}
		return fmt.Errorf("%s %s: %w", op, name, bareErr(err))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", name, err)
	}
	mode := st.Mode & syscall.S_IFMT
	if mode == syscall.S_IFBLK {
		var devSize uint64
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&devSize))); e != 0 {
			return 0, fmt.Errorf("size of %s: %w", name, e)
		}
		if int64(devSize) < d.Size() {
			return 0, fail(exitError, "restore to a device of at least "+humanBytes(d.Size())+", or to a file",
				"%s is %s, %s is %s: it does not fit (nothing was written)", name, humanBytes(int64(devSize)), what, humanBytes(d.Size()))
		}
	}
	sparse := mode == syscall.S_IFREG
	if sparse {
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("truncate %s: %w", name, bareErr(err))
		}
		if err := f.Truncate(d.Size()); err != nil {
			if errors.Is(err, syscall.EFBIG) {
				return 0, fail(exitError, "restore to a filesystem that takes files this large (ext4 with 4 KiB blocks: 16 TiB; XFS: 8 EiB), or to a device",
					"%s: the filesystem cannot hold a file of %s (%s)", name, humanBytes(d.Size()), what)
			}
			return 0, fmt.Errorf("size %s: %w", name, bareErr(err))
		}
	}
	size := d.Size()
	buf := make([]byte, 4<<20)
	var done int64
	const step = 1 << 30
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; off += step {
		exts, err := d.Extents(ctx, off, min(step, size-off))
		if err != nil {
			return done, fmt.Errorf("map blocks: %w", err)
		}
		for _, e := range exts {
			for p := e.Off; p < e.Off+e.Len; {
				n := min(int64(len(buf)), e.Off+e.Len-p)
				if e.Hole {
					if !sparse {
						if _, err := f.Write(zero[:n]); err != nil {
							return done, writeErr("write", err)
						}
					}
				} else {
					if _, err := d.ReadAt(ctx, buf[:n], p); err != nil {
						return done, fmt.Errorf("read at %d: %w", p, err)
					}
					if sparse {
						_, err = f.WriteAt(buf[:n], p)
					} else {
						_, err = f.Write(buf[:n])
					}
					if err != nil {
						return done, writeErr("write", err)
					}
				}
				p += n
				done += n
				if prog != nil {
					prog(progress{Phase: "restore", Done: done, Total: size, Unit: "bytes"})
				}
			}
		}
	}
	if mode == syscall.S_IFREG || mode == syscall.S_IFBLK {
		if err := f.Sync(); err != nil {
			return done, writeErr("sync", err)
		}
	}
	return done, f.Close()
}

// bareErr strips an *iofs.PathError's operation and path, for messages that
// name the file themselves ("write /dev/loop0: write /dev/loop0: ...").
func bareErr(err error) error {
	var pe *iofs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
