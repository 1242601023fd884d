package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/strata-backup/strata/layers"
)

type volumeCmd struct {
	Create volumeCreateCmd `cmd:"" help:"Create a volume: a file tree (default) or, with --block SIZE, a disk image."`
	List   volumeListCmd   `cmd:"" help:"List volumes."`
	Rm     volumeRmCmd     `cmd:"" help:"Remove a volume (with --force also its revisions)."`
}

type volumeCreateCmd struct {
	Name      string `arg:"" help:"Volume name: letters, digits, '.', '_', '-', not starting with '.' or '-'; at most 64."`
	Block     string `placeholder:"SIZE" help:"Make a block volume of SIZE (e.g. 20G, 512MiB; a multiple of 512 bytes). The size is fixed for good: there is no resize."`
	BlockSize string `placeholder:"N" help:"Block size of a block volume: a power of two from 4K to 16M (default 64K). Smaller blocks store scattered small writes in less space; larger ones cost less index."`
}

func (c *volumeCreateCmd) Help() string {
	return `Without --block the volume is a file tree: 'strata mount NAME MNT' shows its
staging, into which rsync writes.

With --block SIZE it is a disk: its staging is served over NBD ('strata nbd
serve', export NAME) or mounted as a directory holding one file, disk.img,
which must be written in place (dd conv=notrunc, qemu-img convert -n, or
mount -o loop).`
}

type volumeCreateArgs struct {
	Name      string `json:"name"`
	Size      int64  `json:"size,omitempty"`
	BlockSize int    `json:"block_size,omitempty"`
}

func (c *volumeCreateCmd) Run(ctx context.Context, g *Globals) error {
	a := volumeCreateArgs{Name: c.Name}
	if c.Block != "" {
		n, err := parseSize(c.Block)
		if err != nil {
			return fail(exitUsage, "sizes look like 20G, 512MiB, 1T", "--block: %v", err)
		}
		// A size of 0 would make a file-tree volume (the protocol's
		// zero value), not the disk a script asked for.
		if n <= 0 || n%512 != 0 {
			return fail(exitUsage, "sizes look like 20G, 512MiB, 1T", "--block %s: the size must be a positive multiple of 512 bytes", c.Block)
		}
		a.Size = n
	}
	if c.BlockSize != "" {
		if c.Block == "" {
			return fail(exitUsage, "", "--block-size needs --block SIZE")
		}
		n, err := parseSize(c.BlockSize)
		if err != nil || n <= 0 || n&(n-1) != 0 || n < 4096 || n > 16<<20 {
			return fail(exitUsage, "", "--block-size must be a power of two between 4K and 16M")
		}
		a.BlockSize = int(n)
	}
	var info layers.VolumeInfo
	if err := call(ctx, g, "volume.create", a, &info); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(volumeOut(info))
	}
	if info.Type == layers.TypeBlock {
		fmt.Printf("created block volume %s (%s, %s blocks)\n", info.Name, humanBytes(info.Size), humanBytes(int64(info.BlockSize)))
	} else {
		fmt.Printf("created volume %s\n", info.Name)
	}
	return nil
}

func opVolumeCreate(ctx context.Context, env *opEnv, a volumeCreateArgs) (any, error) {
	spec := layers.VolumeSpec{Type: layers.TypeFS}
	if a.Size > 0 {
		spec = layers.VolumeSpec{Type: layers.TypeBlock, Size: a.Size, BlockSize: a.BlockSize}
	}
	info, err := env.repo.layers.CreateVolume(ctx, a.Name, spec)
	switch {
	case errors.Is(err, layers.ErrVolumeExists):
		return nil, fail(exitError, "'strata volume list' shows the volumes", "volume %s already exists", a.Name)
	case errors.Is(err, layers.ErrInvalid):
		// The hint is for what was wrong: the name, or the size and
		// block size of a block volume.
		hint := "names use letters, digits, '.', '_' and '-', up to 64 characters, not starting with '.' or '-'"
		if layers.ValidVolumeName(a.Name) {
			hint = "a block volume's SIZE is a positive multiple of 512 bytes (20G, 512MiB), its --block-size a power of two from 4K to 16M"
		}
		return nil, &userError{msg: "invalid volume", hint: hint, code: exitUsage, err: err}
	}
	return info, err
}

type volumeListCmd struct{}

func (c *volumeListCmd) Run(ctx context.Context, g *Globals) error {
	var vols []layers.VolumeInfo
	if err := call(ctx, g, "volume.list", struct{}{}, &vols); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(volumesOut(vols))
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tSIZE\tREVISIONS\tCREATED")
	for _, v := range vols {
		size := "-"
		if v.Type == layers.TypeBlock {
			size = humanBytes(v.Size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", v.Name, v.Type, size, v.Revisions, v.Created.UTC().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

func opVolumeList(ctx context.Context, env *opEnv, _ json.RawMessage) (any, error) {
	vols, err := env.repo.layers.Volumes(ctx)
	if vols == nil {
		vols = []layers.VolumeInfo{}
	}
	return vols, err
}

type volumeRmCmd struct {
	Name  string `arg:"" help:"The volume to remove."`
	Force bool   `help:"Also remove every revision of the volume (its data is freed by the next 'strata prune')."`
}

type volumeRmArgs struct {
	Name  string `json:"name"`
	Force bool   `json:"force"`
}

func (c *volumeRmCmd) Run(ctx context.Context, g *Globals) error {
	if err := call(ctx, g, "volume.rm", volumeRmArgs{c.Name, c.Force}, nil); err != nil {
		return err
	}
	if !g.JSON {
		// QA expected the space back at once: GC runs in prune.
		fmt.Printf("removed volume %s; 'strata prune' frees the space its data held\n", c.Name)
	}
	return nil
}

func opVolumeRemove(ctx context.Context, env *opEnv, a volumeRmArgs) (any, error) {
	info, err := env.repo.layers.Volume(ctx, a.Name)
	if err != nil {
		return nil, volumeErr(err, a.Name)
	}
	if env.srv != nil {
		if where := env.srv.volumeUse(a.Name, info.Type); where != "" {
			return nil, fail(exitError, "unmount or stop that first ('strata status' lists mounts and exports)", "volume %s is %s", a.Name, where)
		}
	}
	err = env.repo.layers.RemoveVolume(ctx, a.Name, a.Force)
	var hr *layers.HasRevisionsError
	if errors.As(err, &hr) {
		return nil, hasRevisionsErr(hr, a.Force)
	}
	return nil, volumeErr(err, a.Name)
}

// protectedShown is how many protected revisions a refused volume rm
// names: enough to unprotect a few by hand, few enough for one line.
const protectedShown = 3

// hasRevisionsErr says why volume rm (with force or not) refused to
// remove a volume with revisions, naming protected ones.
func hasRevisionsErr(hr *layers.HasRevisionsError, force bool) error {
	revs := count(int64(hr.Revisions), "revision")
	if len(hr.Protected) == 0 {
		return fail(exitError, "pass --force to remove them too (this cannot be undone)", "volume %s has %s", hr.Volume, revs)
	}
	var ids []string
	for _, id := range hr.Protected[:min(len(hr.Protected), protectedShown)] {
		ids = append(ids, id[:min(len(id), 8)])
	}
	named := strings.Join(ids, ", ")
	if more := len(hr.Protected) - len(ids); more > 0 {
		named += fmt.Sprintf(" and %d more", more)
	}
	unprotect := fmt.Sprintf("'strata unprotect %s@ID' each of them ('strata list %s' marks them protected)", hr.Volume, hr.Volume)
	if len(hr.Protected) == 1 {
		unprotect = fmt.Sprintf("'strata unprotect %s@%s'", hr.Volume, ids[0])
	}
	hint := fmt.Sprintf("protection keeps a revision from removal: %s first, then 'strata volume rm %s --force' (this cannot be undone)", unprotect, hr.Volume)
	if force {
		return fail(exitError, hint, "volume %s has %s (%s), which --force does not remove", hr.Volume, count(int64(len(hr.Protected)), "protected revision"), named)
	}
	return fail(exitError, hint, "volume %s has %s, %d of them protected (%s)", hr.Volume, revs, len(hr.Protected), named)
}

// volumeErr turns layers' volume errors into messages that say what to do.
func volumeErr(err error, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, layers.ErrUnknownVolume) && strings.Contains(name, "@"):
		return &userError{msg: fmt.Sprintf("no volume named %q", name), hint: "this command takes a volume name, not NAME@REV", code: exitUsage, err: err, quiet: true}
	case errors.Is(err, layers.ErrUnknownVolume):
		return &userError{msg: fmt.Sprintf("no volume named %q", name), hint: "'strata volume list' shows the volumes; 'strata volume create NAME' makes one", code: exitError, err: err, quiet: true}
	case errors.Is(err, layers.ErrNoRevisions):
		return &userError{msg: fmt.Sprintf("volume %s has no revisions yet", name), hint: "'strata commit " + name + "' makes one", code: exitError, err: err, quiet: true}
	case errors.Is(err, layers.ErrNoSpace) || errors.Is(err, syscall.ENOSPC):
		return &userError{msg: "the repository is full", hint: "remove from staging what does not fit and commit, then 'strata prune' to give space back (or free space on the shard filesystems); committed revisions are intact and staging keeps what was written", code: exitError, err: err}
	case errors.Is(err, layers.ErrWrongType):
		return &userError{msg: fmt.Sprintf("volume %s is not of the right type for this", name), code: exitError, err: err}
	}
	return err
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
