package layers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// tree is the implementation behind Tree: a volume read at a fixed layer
// seq (a revision), or at the moving staging seq with the staging spool
// laid over it.
type tree struct {
	v       *volume
	seq     uint64    // revisions: the sealed layer's seq
	staging bool      // staging head: read at v.seq, overlay dirty files
	files   *fileMaps // revisions: recently read files' maps (nil: none)
}

func (t *Tree) at() uint64 {
	if t.staging {
		return t.v.seq.Load()
	}
	return t.seq
}

func (v *volume) getInode(rd *rtx, ino Ino, seq uint64) (inode, uint64, error) {
	b, vseq, err := v.getKeyed(rd, ino, rkIno(recAttr, uint64(ino)), seq)
	if err != nil {
		if isNotFound(err) {
			return inode{}, 0, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
		}
		return inode{}, 0, err
	}
	n, err := decodeInode(ino, b)
	return n, vseq, err
}

func (v *volume) getExtents(rd *rtx, ino Ino, seq uint64) ([]extent, uint64, error) {
	b, vseq, err := v.getKeyed(rd, ino, rkIno(recExtents, uint64(ino)), seq)
	es, err := extentsRecord(b, err)
	if err != nil {
		return nil, 0, err
	}
	return es, vseq, nil
}

// extentsRecord decodes an extent-map record as read (b, err): no record
// is a file of holes only.
func extentsRecord(b []byte, err error) ([]extent, error) {
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeExtents(b)
}

func (v *volume) getDirent(rd *rtx, parent Ino, name string, seq uint64) (Dirent, error) {
	b, _, err := v.getKeyed(rd, parent, rkName(recDirent, uint64(parent), name), seq)
	if err != nil {
		return Dirent{}, err
	}
	return decodeDirent(name, b)
}

// attr reads an inode and, on the staging head, lays a dirty file's
// buffered size and times over it. A flush records the file before it
// forgets it, and rd's view of pending writes cannot change under it, so
// a read sees the record current or the open file there.
func (t *Tree) attr(rd *rtx, ino Ino) (inode, error) {
	return t.overlaid(ino, func() (inode, error) {
		n, _, err := t.v.getInode(rd, ino, t.at())
		return n, err
	})
}

// overlaid is inode ino as read(), with the open file's buffered size and
// times laid over it on staging (see attr for the order).
func (t *Tree) overlaid(ino Ino, read func() (inode, error)) (inode, error) {
	var f *openFile
	if t.staging {
		f = t.v.lookupFile(ino)
	}
	n, err := read()
	if err == nil && f != nil {
		f.overlay(&n.Attr)
	}
	return n, err
}

// view runs fn with a reader of the tree: a badger snapshot, with the
// pending writes laid over it on the staging head.
func (t *Tree) view(fn func(rd *rtx) error) error {
	if t.staging {
		return t.v.stagingView(fn)
	}
	return t.v.r.db.View(func(txn *badger.Txn) error { return fn(sealed(txn)) })
}

// Lookup finds name in directory parent. Errors: ErrNotFound, ErrNotDir.
func (t *Tree) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	var a Attr
	err := t.view(func(rd *rtx) error {
		d, err := t.v.getDirent(rd, parent, name, t.at())
		if err != nil {
			if !isNotFound(err) {
				return err
			}
			p, err := t.attr(rd, parent)
			if err != nil {
				return err
			}
			if !isDir(p.Mode) {
				return ErrNotDir
			}
			return ErrNotFound
		}
		n, err := t.attr(rd, d.Ino)
		a = n.Attr
		return err
	})
	if err == ErrNotFound || err == ErrNotDir {
		// An answer, not a failure, and a frequent one (rsync looks up
		// three absent names per file it writes): no message to build.
		return Attr{}, err
	}
	if err != nil {
		return Attr{}, fmt.Errorf("lookup %q in %d: %w", name, parent, err)
	}
	return a, nil
}

// GetAttr returns the attributes of ino.
func (t *Tree) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	var a Attr
	err := t.view(func(rd *rtx) error {
		n, err := t.attr(rd, ino)
		a = n.Attr
		return err
	})
	return a, err
}

// GetAttrs reads the attributes of each of inos as GetAttr would, in one
// view with one iterator: READDIRPLUS needs the attributes of a whole
// page of entries, and a directory's entries mostly have neighbouring
// inode numbers, so stepping from one record to the next replaces a point
// lookup and a seek per entry. fn gets the index into inos and the
// attributes of each inode found, in inode order; absent ones are
// skipped.
func (t *Tree) GetAttrs(ctx context.Context, inos []Ino, fn func(i int, a Attr)) error {
	order := make([]int, len(inos))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(inos[a], inos[b]) })
	seq := t.at()
	err := t.view(func(rd *rtx) error {
		c := newVersionCursor(rd, t.v.id, dataPrefix(t.v.id, []byte{recAttr}))
		defer c.close()
		for _, i := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			ino := inos[i]
			n, err := t.overlaid(ino, func() (inode, error) {
				b, _, err := c.get(rkIno(recAttr, uint64(ino)), seq)
				if err != nil {
					return inode{}, err
				}
				return decodeInode(ino, b)
			})
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			fn(i, n.Attr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read attributes of %d inodes: %w", len(inos), err)
	}
	return nil
}

// LoadFileMaps reads the extent maps of the regular files among attrs (a
// directory batch from GetAttrs) into a revision's file-map cache, for the
// readers that come next: the prefetcher reads every small file a listing
// shows. It walks the index once in inode order, stepping between
// neighbouring files, where a lookup per file costs an inode and an extent
// record, each an iterator seek through every table when the record was
// written by an earlier layer than the revision's (most records of a
// revision are). A no-op on staging, which has no such cache.
func (t *Tree) LoadFileMaps(ctx context.Context, attrs []Attr) error {
	if t.files == nil {
		return nil
	}
	todo := make([]Attr, 0, len(attrs))
	for _, a := range attrs {
		if isReg(a.Mode) && a.Size > 0 {
			if _, ok := t.files.get(a.Ino); !ok {
				todo = append(todo, a)
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	slices.SortFunc(todo, func(a, b Attr) int { return cmp.Compare(a.Ino, b.Ino) })
	seq := t.at()
	err := t.view(func(rd *rtx) error {
		c := newVersionCursor(rd, t.v.id, dataPrefix(t.v.id, []byte{recExtents}))
		defer c.close()
		for _, a := range todo {
			if err := ctx.Err(); err != nil {
				return err
			}
			b, _, err := c.get(rkIno(recExtents, uint64(a.Ino)), seq)
			es, err := extentsRecord(b, err)
			if err != nil {
				return err
			}
			t.files.add(a.Ino, fileMap{size: a.Size, es: es})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read extent maps of %d files: %w", len(todo), err)
	}
	return nil
}

// ReadDir calls fn for the entries of directory ino in name order, starting
// after name `after` ("" = from the start), until fn returns false. "." and
// ".." are not included. Memory does not grow with directory size.
func (t *Tree) ReadDir(ctx context.Context, ino Ino, after string, fn func(Dirent) bool) error {
	seq := t.at()
	err := t.view(func(rd *rtx) error {
		n, _, err := t.v.getInode(rd, ino, seq)
		if err != nil {
			return err
		}
		if !isDir(n.Mode) {
			return ErrNotDir
		}
		return scanNames(rd, t.v.id, rkNamePrefix(recDirent, uint64(ino)), seq, after, true,
			func(name string, val []byte) (bool, error) {
				if err := ctx.Err(); err != nil {
					return false, err
				}
				d, err := decodeDirent(name, val)
				if err != nil {
					return false, err
				}
				return fn(d), nil
			})
	})
	if err != nil {
		return fmt.Errorf("read directory %d: %w", ino, err)
	}
	return nil
}

// Path names inode ino by following the directory each inode records
// (inode.Parent) up to the root and finding its name there: a path
// relative to the root, "" for the root itself. A file's recorded
// directory is where it was made or last renamed to, so a file reached
// only through another hard link, or unlinked, has no path: ErrNotFound.
// Each step lists the parent directory until the name turns up, so it is
// for naming a few inodes in a message, not for every file of a tree.
func (t *Tree) Path(ctx context.Context, ino Ino) (string, error) {
	var parts []string
	// The depth bound stops a loop that damaged records could make.
	for cur := ino; cur != RootIno; {
		if len(parts) >= 4096 {
			return "", fmt.Errorf("path of inode %d: deeper than 4096 directories: %w", ino, ErrNotFound)
		}
		var n inode
		err := t.view(func(rd *rtx) error {
			var err error
			n, _, err = t.v.getInode(rd, cur, t.at())
			return err
		})
		if err != nil {
			return "", fmt.Errorf("path of inode %d: %w", ino, err)
		}
		name := ""
		err = t.ReadDir(ctx, n.Parent, "", func(d Dirent) bool {
			if d.Ino == cur {
				name = d.Name
				return false
			}
			return true
		})
		if err != nil {
			return "", fmt.Errorf("path of inode %d: %w", ino, err)
		}
		if name == "" {
			return "", fmt.Errorf("path of inode %d: no link to inode %d in directory %d: %w", ino, cur, n.Parent, ErrNotFound)
		}
		parts = append(parts, name)
		cur = n.Parent
	}
	slices.Reverse(parts)
	return strings.Join(parts, "/"), nil
}

// Readlink returns a symlink's target.
func (t *Tree) Readlink(ctx context.Context, ino Ino) (string, error) {
	var target string
	err := t.view(func(rd *rtx) error {
		n, _, err := t.v.getInode(rd, ino, t.at())
		if err != nil {
			return err
		}
		if !isLnk(n.Mode) {
			return ErrInvalid
		}
		target = n.Target
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("readlink %d: %w", ino, err)
	}
	return target, nil
}

// ReadAt reads file data; holes read as zeros; short count only at EOF.
func (t *Tree) ReadAt(ctx context.Context, ino Ino, p []byte, off int64) (int, error) {
	return t.readAt(ctx, ino, p, off, false)
}

// ReadOnce is ReadAt for a reader that reads a file once and keeps the
// bytes itself, as the prefetcher does when it hands small files to the
// kernel's page cache. Whole chunks are decrypted straight into p, with
// no buffer allocated (and zeroed) for each, and are not kept in the
// chunk cache, where a stream of small files would push out the chunks of
// the large files being read beside them.
func (t *Tree) ReadOnce(ctx context.Context, ino Ino, p []byte, off int64) (int, error) {
	return t.readAt(ctx, ino, p, off, true)
}

func (t *Tree) readAt(ctx context.Context, ino Ino, p []byte, off int64, once bool) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %d: negative offset: %w", ino, ErrInvalid)
	}
	if t.staging {
		if f := t.v.lookupFile(ino); f != nil {
			n, ok, err := f.readAt(ctx, p, off)
			if ok {
				return n, err
			}
		}
	}
	m, err := t.fileMap(ino)
	if err != nil {
		return 0, fmt.Errorf("read %d: %w", ino, err)
	}
	size, es := m.size, m.es
	if off >= size {
		return 0, nil
	}
	if rest := size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if err := t.v.r.readExtents(ctx, es, p, off, once); err != nil {
		return 0, fmt.Errorf("read %d: %w", ino, err)
	}
	return len(p), nil
}

// fileMap returns the size and extent map of regular file ino, from the
// cache on a revision.
func (t *Tree) fileMap(ino Ino) (fileMap, error) {
	cache := t.files // nil on staging, which changes
	if cache != nil {
		if m, ok := cache.get(ino); ok {
			return m, nil
		}
	}
	var m fileMap
	err := t.view(func(rd *rtx) error {
		n, _, err := t.v.getInode(rd, ino, t.at())
		if err != nil {
			return err
		}
		if isDir(n.Mode) {
			return ErrIsDir
		}
		m.size = n.Size
		m.es, _, err = t.v.getExtents(rd, ino, t.at())
		return err
	})
	if err != nil {
		return fileMap{}, err
	}
	if cache != nil {
		cache.add(ino, m)
	}
	return m, nil
}

// readExtents fills p with the data at off described by the sorted extent
// map es; gaps are zeros. once: see ReadOnce.
func (r *Repo) readExtents(ctx context.Context, es []extent, p []byte, off int64, once bool) error {
	end := off + int64(len(p))
	i := sort.Search(len(es), func(i int) bool { return es[i].Off+es[i].Len > off })
	pos := off
	for ; i < len(es) && es[i].Off < end; i++ {
		e := es[i]
		if e.Off > pos {
			clear(p[pos-off : e.Off-off])
			pos = e.Off
		}
		if once && pos == e.Off && e.Off+e.Len <= end {
			if err := r.readChunkOnce(ctx, e.ID, p[pos-off:pos-off+e.Len]); err != nil {
				return err
			}
			pos += e.Len
			continue
		}
		data, err := r.getChunk(ctx, e.ID)
		if err != nil {
			return err
		}
		if int64(len(data)) != e.Len {
			return fmt.Errorf("chunk %s: length %d, extent says %d", e.ID.Short(), len(data), e.Len)
		}
		n := copy(p[pos-off:], data[pos-e.Off:])
		pos += int64(n)
	}
	if pos < end {
		clear(p[pos-off:])
	}
	return nil
}

// GetXattr returns one extended attribute. Errors: ErrNoXattr.
func (t *Tree) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	var val []byte
	err := t.view(func(rd *rtx) error {
		if _, _, err := t.v.getInode(rd, ino, t.at()); err != nil {
			return err
		}
		b, _, err := t.v.getKeyed(rd, ino, rkName(recXattr, uint64(ino), name), t.at())
		if isNotFound(err) {
			return ErrNoXattr
		}
		val = b
		return err
	})
	if err == ErrNoXattr {
		return nil, err // an answer, asked for on every create (default ACLs)
	}
	if err != nil {
		return nil, fmt.Errorf("get xattr %q of %d: %w", name, ino, err)
	}
	return val, nil
}

// ListXattr lists extended attribute names.
func (t *Tree) ListXattr(ctx context.Context, ino Ino) ([]string, error) {
	var names []string
	err := t.view(func(rd *rtx) error {
		if _, _, err := t.v.getInode(rd, ino, t.at()); err != nil {
			return err
		}
		return scanNames(rd, t.v.id, rkNamePrefix(recXattr, uint64(ino)), t.at(), "", false,
			func(name string, _ []byte) (bool, error) {
				names = append(names, name)
				return true, nil
			})
	})
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %d: %w", ino, err)
	}
	return names, nil
}

// Extents reports data and hole runs of a file in [off, off+len), for
// SEEK_DATA/SEEK_HOLE and sparse copies. Runs stop at the end of the file.
func (t *Tree) Extents(ctx context.Context, ino Ino, off, length int64) ([]Extent, error) {
	if off < 0 || length < 0 {
		return nil, fmt.Errorf("extents of %d: %w", ino, ErrInvalid)
	}
	if t.staging {
		if f := t.v.lookupFile(ino); f != nil {
			out, ok, err := f.extents(off, length)
			if ok {
				return out, err
			}
		}
	}
	var size int64
	var es []extent
	err := t.view(func(rd *rtx) error {
		n, _, err := t.v.getInode(rd, ino, t.at())
		if err != nil {
			return err
		}
		size = n.Size
		es, _, err = t.v.getExtents(rd, ino, t.at())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("extents of %d: %w", ino, err)
	}
	end := min(off+length, size)
	var out []Extent
	add := func(o, l int64, hole bool) {
		if l <= 0 {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole && out[k].Off+out[k].Len == o {
			out[k].Len += l
			return
		}
		out = append(out, Extent{Off: o, Len: l, Hole: hole})
	}
	pos := off
	for _, e := range es {
		if pos >= end {
			break
		}
		if e.Off+e.Len <= pos {
			continue
		}
		if e.Off > pos {
			add(pos, min(e.Off, end)-pos, true)
			pos = min(e.Off, end)
		}
		if pos < end {
			l := min(e.Off+e.Len, end) - pos
			add(pos, l, false)
			pos += l
		}
	}
	if pos < end {
		add(pos, end-pos, true)
	}
	return out, nil
}
