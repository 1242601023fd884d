package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// Diff reports the paths that differ between revisions a and b (ids) of an
// fs volume, in path order; for block volumes, changed byte ranges as
// DiffEntry{Path: "disk.img", Change: 'M', Off, Len} runs.
//
// fs volumes: an entry only in a is '-', only in b '+' (directories list
// their contents too); a file whose data or symlink target changed is
// 'M', a changed file type 'T', and changed mode, owner, mtime or xattrs
// alone 'A'. Directories are reported only for their own mode, owner or
// xattrs (their mtime follows their entries).
func (r *Repo) Diff(ctx context.Context, volume, a, b string, fn func(DiffEntry) error) error {
	v, err := r.volume(volume)
	if err != nil {
		return err
	}
	ra, err := v.revision(a)
	if err != nil {
		return err
	}
	rb, err := v.revision(b)
	if err != nil {
		return err
	}
	if v.rec.Type == TypeBlock {
		return v.diffBlocks(ctx, ra.Seq, rb.Seq, fn)
	}
	d := &differ{ctx: ctx, a: &Tree{tree{v: v, seq: ra.Seq}}, b: &Tree{tree{v: v, seq: rb.Seq}}, fn: fn}
	if err := d.dir(RootIno, RootIno, ""); err != nil {
		return fmt.Errorf("diff %s %s..%s: %w", volume, a, b, err)
	}
	return nil
}

type differ struct {
	ctx  context.Context
	a, b *Tree
	fn   func(DiffEntry) error
}

// pager streams a directory in pages, so two directories can be merged
// without holding either in memory.
type pager struct {
	ctx   context.Context
	t     *Tree
	ino   Ino
	page  []Dirent
	after string
	done  bool
}

func (p *pager) peek() (Dirent, bool, error) {
	if len(p.page) == 0 && !p.done {
		n := 0
		err := p.t.ReadDir(p.ctx, p.ino, p.after, func(d Dirent) bool {
			p.page = append(p.page, d)
			n++
			return n < 256
		})
		if err != nil {
			return Dirent{}, false, err
		}
		if n < 256 {
			p.done = true
		}
		if n > 0 {
			p.after = p.page[n-1].Name
		}
	}
	if len(p.page) == 0 {
		return Dirent{}, false, nil
	}
	return p.page[0], true, nil
}

func (p *pager) pop() { p.page = p.page[1:] }

func (d *differ) dir(inoA, inoB Ino, path string) error {
	pa := &pager{ctx: d.ctx, t: d.a, ino: inoA}
	pb := &pager{ctx: d.ctx, t: d.b, ino: inoB}
	for {
		ea, okA, err := pa.peek()
		if err != nil {
			return err
		}
		eb, okB, err := pb.peek()
		if err != nil {
			return err
		}
		switch {
		case !okA && !okB:
			return nil
		case okA && (!okB || ea.Name < eb.Name):
			pa.pop()
			if err := d.all(d.a, ea, path+"/"+ea.Name, '-'); err != nil {
				return err
			}
		case okB && (!okA || eb.Name < ea.Name):
			pb.pop()
			if err := d.all(d.b, eb, path+"/"+eb.Name, '+'); err != nil {
				return err
			}
		default:
			pa.pop()
			pb.pop()
			if err := d.entry(ea, eb, path+"/"+ea.Name); err != nil {
				return err
			}
		}
	}
}

// all reports an entry and everything under it as added or removed.
func (d *differ) all(t *Tree, e Dirent, path string, change byte) error {
	var n inode
	if err := t.view(func(rd *rtx) error {
		var err error
		n, err = t.attr(rd, e.Ino)
		return err
	}); err != nil {
		return err
	}
	a := n.Attr
	de := DiffEntry{Path: path, Change: change}
	if change == '+' {
		de.NewSize, de.NewTarget = diffSide(n)
	} else {
		de.OldSize, de.OldTarget = diffSide(n)
	}
	if err := d.fn(de); err != nil {
		return err
	}
	if !isDir(a.Mode) {
		return nil
	}
	p := &pager{ctx: d.ctx, t: t, ino: e.Ino}
	for {
		c, ok, err := p.peek()
		if err != nil || !ok {
			return err
		}
		p.pop()
		if err := d.all(t, c, path+"/"+c.Name, change); err != nil {
			return err
		}
	}
}

func (d *differ) entry(ea, eb Dirent, path string) error {
	var na, nb inode
	var ea_, eb_ []extent
	var xa, xb [][2]string
	read := func(t *Tree, ino Ino, n *inode, es *[]extent, xs *[][2]string) error {
		return t.view(func(rd *rtx) error {
			var err error
			if *n, _, err = t.v.getInode(rd, ino, t.seq); err != nil {
				return err
			}
			if isReg(n.Mode) {
				if *es, _, err = t.v.getExtents(rd, ino, t.seq); err != nil {
					return err
				}
			}
			return scanNames(rd, t.v.id, rkNamePrefix(recXattr, uint64(ino)), t.seq, "", true,
				func(name string, val []byte) (bool, error) {
					*xs = append(*xs, [2]string{name, string(val)})
					return true, nil
				})
		})
	}
	if err := read(d.a, ea.Ino, &na, &ea_, &xa); err != nil {
		return err
	}
	if err := read(d.b, eb.Ino, &nb, &eb_, &xb); err != nil {
		return err
	}
	de := DiffEntry{Path: path}
	de.OldSize, de.OldTarget = diffSide(na)
	de.NewSize, de.NewTarget = diffSide(nb)
	switch {
	case na.Mode&syscall.S_IFMT != nb.Mode&syscall.S_IFMT:
		de.Change = 'T'
	case isReg(na.Mode) && (na.Size != nb.Size || !slices.Equal(ea_, eb_)),
		isLnk(na.Mode) && na.Target != nb.Target,
		na.Rdev != nb.Rdev:
		de.Change = 'M'
	case na.Mode != nb.Mode || na.Uid != nb.Uid || na.Gid != nb.Gid || !slices.Equal(xa, xb),
		!isDir(na.Mode) && !na.Mtime.Equal(nb.Mtime):
		de.Change = 'A'
	}
	if de.Change != 0 {
		if err := d.fn(de); err != nil {
			return err
		}
	}
	if de.Change == 'T' {
		// Report what went and what came under a directory that changed type.
		if isDir(na.Mode) {
			return d.under(d.a, ea.Ino, path, '-')
		}
		if isDir(nb.Mode) {
			return d.under(d.b, eb.Ino, path, '+')
		}
		return nil
	}
	if isDir(na.Mode) {
		return d.dir(ea.Ino, eb.Ino, path)
	}
	return nil
}

func (d *differ) under(t *Tree, ino Ino, path string, change byte) error {
	p := &pager{ctx: d.ctx, t: t, ino: ino}
	for {
		c, ok, err := p.peek()
		if err != nil || !ok {
			return err
		}
		p.pop()
		if err := d.all(t, c, path+"/"+c.Name, change); err != nil {
			return err
		}
	}
}

// diffBlocks reports runs of blocks whose content differs between layer
// seqs a and b, in one pass over the block records.
func (v *volume) diffBlocks(ctx context.Context, seqA, seqB uint64, fn func(DiffEntry) error) error {
	bs := int64(v.rec.BlockSize)
	var run DiffEntry
	emit := func() error {
		if run.Len == 0 {
			return nil
		}
		err := fn(run)
		run = DiffEntry{}
		return err
	}
	changed := func(idx int64) error {
		off := idx * bs
		if run.Len > 0 && run.Off+run.Len == off {
			run.Len += bs
			return nil
		}
		if err := emit(); err != nil {
			return err
		}
		run = DiffEntry{Path: "disk.img", Change: 'M', Off: off, Len: bs, OldSize: v.rec.Size, NewSize: v.rec.Size}
		return nil
	}
	err := v.r.db.View(func(txn *badger.Txn) error {
		prefix := dataPrefix(v.id, []byte{recBlock})
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		var cur []byte
		var valA, valB []byte
		var haveA, haveB bool
		finish := func() error {
			if cur == nil {
				return nil
			}
			if !bytes.Equal(liveOrNil(valA, haveA), liveOrNil(valB, haveB)) {
				return changed(int64(binary.BigEndian.Uint64(cur[1:])))
			}
			return nil
		}
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rk, vseq := splitVersion(it.Item().Key())
			if !bytes.Equal(rk, cur) {
				if err := finish(); err != nil {
					return err
				}
				cur = append(cur[:0], rk...)
				haveA, haveB = false, false
				valA, valB = nil, nil
			}
			if (vseq <= seqA && !haveA) || (vseq <= seqB && !haveB) {
				val, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				if vseq <= seqA && !haveA {
					valA, haveA = val, true
				}
				if vseq <= seqB && !haveB {
					valB, haveB = val, true
				}
			}
		}
		return finish()
	})
	if err != nil {
		return fmt.Errorf("diff blocks of %s: %w", v.rec.Name, err)
	}
	return emit()
}

// liveOrNil returns a record's live value, or nil for a tombstone or none.
func liveOrNil(val []byte, have bool) []byte {
	if !have || len(val) == 0 || val[0] != valLive {
		return nil
	}
	return val
}

// diffSide is what a diff entry shows of one side: a regular file's size,
// a symlink's target and its length (as stat gives it), nothing of other
// types.
func diffSide(n inode) (size int64, target string) {
	switch {
	case isReg(n.Mode):
		return n.Size, ""
	case isLnk(n.Mode):
		return int64(len(n.Target)), n.Target
	}
	return 0, ""
}
