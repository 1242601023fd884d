package layers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store/chunk"
)

// mnode is one inode of the reference model.
type mnode struct {
	ino      layers.Ino // the staging inode it corresponds to
	mode     uint32
	uid, gid uint32
	nlink    uint32
	data     []byte
	target   string
	xattrs   map[string][]byte
	children map[string]*mnode // directories
	parent   *mnode            // directories
}

type model struct {
	root *mnode
}

func (n *mnode) isDir() bool { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }

// paths returns every (parent, name) pair in the model, in a stable order.
func (m *model) entries() []mentry {
	var out []mentry
	var walk func(d *mnode)
	walk = func(d *mnode) {
		names := make([]string, 0, len(d.children))
		for n := range d.children {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c := d.children[n]
			out = append(out, mentry{d, n, c})
			if c.isDir() {
				walk(c)
			}
		}
	}
	walk(m.root)
	return out
}

type mentry struct {
	parent *mnode
	name   string
	node   *mnode
}

func (m *model) dirs() []*mnode {
	out := []*mnode{m.root}
	for _, e := range m.entries() {
		if e.node.isDir() {
			out = append(out, e.node)
		}
	}
	return out
}

func isAncestor(a, b *mnode) bool {
	for ; b != nil; b = b.parent {
		if a == b {
			return true
		}
	}
	return false
}

// applyModel applies one op to the model and returns the sentinel error it
// expects from staging (nil for success).
type op struct {
	desc  string
	model func() error
	real  func() error
}

func TestModelRandomOps(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			steps := 600
			if raceEnabled {
				steps = 200
			}
			runModel(t, seed, steps)
		})
	}
}

func runModel(t *testing.T, seed int64, steps int) {
	ctx := context.Background()
	e := newEnv(t, false)
	st := e.staging(t, "m")
	rng := rand.New(rand.NewSource(seed))
	m := &model{root: &mnode{ino: layers.RootIno, mode: syscall.S_IFDIR | 0o755, nlink: 2, xattrs: map[string][]byte{}, children: map[string]*mnode{}}}
	names := []string{"a", "b", "c", "d", "e", "long-" + string(bytes.Repeat([]byte("x"), 200))}
	pickDir := func() *mnode { ds := m.dirs(); return ds[rng.Intn(len(ds))] }
	pickEntry := func() (mentry, bool) {
		es := m.entries()
		if len(es) == 0 {
			return mentry{}, false
		}
		return es[rng.Intn(len(es))], true
	}
	pickFile := func() *mnode {
		var fs []*mnode
		for _, e := range m.entries() {
			if e.node.mode&syscall.S_IFMT == syscall.S_IFREG {
				fs = append(fs, e.node)
			}
		}
		if len(fs) == 0 {
			return nil
		}
		return fs[rng.Intn(len(fs))]
	}
	newNode := func(mode uint32) *mnode {
		return &mnode{mode: mode, nlink: 1, xattrs: map[string][]byte{}}
	}
	for step := 0; step < steps; step++ {
		var desc string
		var want, got error
		switch k := rng.Intn(20); {
		case k < 3: // create file
			d, name := pickDir(), names[rng.Intn(len(names))]
			desc = fmt.Sprintf("create %d/%s", d.ino, name)
			a, err := st.Create(ctx, d.ino, name, syscall.S_IFREG|0o644, 1, 2, 0)
			got = err
			if _, ok := d.children[name]; ok {
				want = layers.ErrExists
			} else {
				n := newNode(syscall.S_IFREG | 0o644)
				n.uid, n.gid = 1, 2
				n.ino = a.Ino
				d.children[name] = n
			}
		case k < 4: // mkdir
			d, name := pickDir(), names[rng.Intn(len(names))]
			desc = fmt.Sprintf("mkdir %d/%s", d.ino, name)
			a, err := st.Mkdir(ctx, d.ino, name, 0o750, 0, 0)
			got = err
			if _, ok := d.children[name]; ok {
				want = layers.ErrExists
			} else {
				n := newNode(syscall.S_IFDIR | 0o750)
				n.nlink, n.children, n.parent, n.ino = 2, map[string]*mnode{}, d, a.Ino
				d.children[name] = n
				d.nlink++
			}
		case k < 5: // symlink or fifo
			d, name := pickDir(), names[rng.Intn(len(names))]
			var a layers.Attr
			var err error
			n := newNode(syscall.S_IFLNK | 0o777)
			if rng.Intn(2) == 0 {
				desc = fmt.Sprintf("symlink %d/%s", d.ino, name)
				n.target = fmt.Sprintf("target-%d", step)
				a, err = st.Symlink(ctx, d.ino, name, n.target, 0, 0)
			} else {
				desc = fmt.Sprintf("mkfifo %d/%s", d.ino, name)
				n.mode = syscall.S_IFIFO | 0o600
				a, err = st.Create(ctx, d.ino, name, n.mode, 0, 0, 0)
			}
			got = err
			if _, ok := d.children[name]; ok {
				want = layers.ErrExists
			} else {
				n.ino = a.Ino
				d.children[name] = n
			}
		case k < 6: // link
			f := pickFile()
			if f == nil {
				continue
			}
			d, name := pickDir(), names[rng.Intn(len(names))]
			desc = fmt.Sprintf("link %d as %d/%s", f.ino, d.ino, name)
			_, got = st.Link(ctx, f.ino, d.ino, name)
			if _, ok := d.children[name]; ok {
				want = layers.ErrExists
			} else {
				d.children[name] = f
				f.nlink++
			}
		case k < 7: // unlink
			en, ok := pickEntry()
			if !ok {
				continue
			}
			desc = fmt.Sprintf("unlink %d/%s", en.parent.ino, en.name)
			got = st.Unlink(ctx, en.parent.ino, en.name)
			if en.node.isDir() {
				want = layers.ErrIsDir
			} else {
				delete(en.parent.children, en.name)
				en.node.nlink--
			}
		case k < 8: // rmdir
			en, ok := pickEntry()
			if !ok {
				continue
			}
			desc = fmt.Sprintf("rmdir %d/%s", en.parent.ino, en.name)
			got = st.Rmdir(ctx, en.parent.ino, en.name)
			switch {
			case !en.node.isDir():
				want = layers.ErrNotDir
			case len(en.node.children) > 0:
				want = layers.ErrNotEmpty
			default:
				delete(en.parent.children, en.name)
				en.parent.nlink--
			}
		case k < 10: // rename
			en, ok := pickEntry()
			if !ok {
				continue
			}
			d, name := pickDir(), names[rng.Intn(len(names))]
			flags := []uint32{0, 0, layers.RenameNoReplace, layers.RenameExchange}[rng.Intn(4)]
			desc = fmt.Sprintf("rename %d/%s -> %d/%s flags %d", en.parent.ino, en.name, d.ino, name, flags)
			got = st.Rename(ctx, en.parent.ino, en.name, d.ino, name, flags)
			want = modelRename(en, d, name, flags)
		case k < 14: // write
			f := pickFile()
			if f == nil {
				continue
			}
			off := int64(rng.Intn(5 << 19))
			if rng.Intn(3) == 0 {
				off = int64(len(f.data))
			}
			p := make([]byte, rng.Intn(96<<10)+1)
			if rng.Intn(5) > 0 {
				rng.Read(p)
			}
			desc = fmt.Sprintf("write %d at %d len %d", f.ino, off, len(p))
			_, got = st.WriteAt(ctx, f.ino, p, off)
			if int(off)+len(p) > len(f.data) {
				f.data = append(f.data, make([]byte, int(off)+len(p)-len(f.data))...)
			}
			copy(f.data[off:], p)
		case k < 15: // truncate
			f := pickFile()
			if f == nil {
				continue
			}
			size := int64(rng.Intn(3 << 20))
			if rng.Intn(3) == 0 {
				size = 0
			}
			desc = fmt.Sprintf("truncate %d to %d", f.ino, size)
			_, got = st.SetAttr(ctx, f.ino, layers.SetAttr{Size: &size})
			if int(size) > len(f.data) {
				f.data = append(f.data, make([]byte, int(size)-len(f.data))...)
			}
			f.data = f.data[:size]
		case k < 16: // xattrs
			en, ok := pickEntry()
			if !ok {
				continue
			}
			n := en.node
			xn := []string{"user.a", "user.b", "system.posix_acl_access"}[rng.Intn(3)]
			if rng.Intn(3) == 0 {
				desc = fmt.Sprintf("removexattr %d %s", n.ino, xn)
				got = st.RemoveXattr(ctx, n.ino, xn)
				if _, ok := n.xattrs[xn]; !ok {
					want = layers.ErrNoXattr
				}
				delete(n.xattrs, xn)
			} else {
				val := []byte(fmt.Sprintf("v%d", step))
				flags := uint32(rng.Intn(3))
				desc = fmt.Sprintf("setxattr %d %s flags %d", n.ino, xn, flags)
				got = st.SetXattr(ctx, n.ino, xn, val, flags)
				_, has := n.xattrs[xn]
				switch {
				case flags == 1 && has:
					want = layers.ErrExists
				case flags == 2 && !has:
					want = layers.ErrNoXattr
				default:
					n.xattrs[xn] = val
				}
			}
		case k < 17: // chmod/chown
			en, ok := pickEntry()
			if !ok {
				continue
			}
			mode, uid := uint32(rng.Intn(0o7777)), uint32(rng.Intn(1000))
			desc = fmt.Sprintf("chmod %d %o uid %d", en.node.ino, mode, uid)
			_, got = st.SetAttr(ctx, en.node.ino, layers.SetAttr{Mode: &mode, Uid: &uid})
			en.node.mode = en.node.mode&syscall.S_IFMT | mode
			en.node.uid = uid
		case k < 19: // flush a file
			f := pickFile()
			if f == nil {
				continue
			}
			durable := rng.Intn(3) == 0
			desc = fmt.Sprintf("flush %d durable %v", f.ino, durable)
			got = st.FlushFile(ctx, f.ino, durable)
		default:
			if rng.Intn(2) == 0 {
				desc = "sync"
				got = st.Sync(ctx)
			} else {
				desc = "commit"
				_, got = e.repo.Commit(ctx, "m", layers.CommitOptions{})
			}
		}
		if (want == nil) != (got == nil) || (want != nil && !errors.Is(got, want)) {
			t.Fatalf("step %d %s: got error %v, want %v", step, desc, got, want)
		}
		compareTree(t, st.Tree(), m, fmt.Sprintf("step %d %s", step, desc), step%20 == 0)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatalf("sync: %v", err)
	}
	compareTree(t, st.Tree(), m, "after sync", true)
}

// modelRename applies rename(2) semantics to the model.
func modelRename(src mentry, d *mnode, name string, flags uint32) error {
	sp, sn := src.parent, src.node
	dn, exists := d.children[name]
	if flags == layers.RenameExchange {
		if !exists {
			return layers.ErrNotFound
		}
		if dn == sn {
			return nil
		}
		if sp != d {
			if (sn.isDir() && isAncestor(sn, d)) || (dn.isDir() && isAncestor(dn, sp)) {
				return layers.ErrInvalid
			}
		}
		sp.children[src.name], d.children[name] = dn, sn
		if sp != d {
			if sn.isDir() {
				sp.nlink--
				d.nlink++
				sn.parent = d
			}
			if dn.isDir() {
				d.nlink--
				sp.nlink++
				dn.parent = sp
			}
		}
		return nil
	}
	if exists && flags == layers.RenameNoReplace {
		return layers.ErrExists
	}
	if exists && dn == sn {
		return nil
	}
	if sn.isDir() && sp != d && isAncestor(sn, d) {
		return layers.ErrInvalid
	}
	if exists {
		switch {
		case sn.isDir() && !dn.isDir():
			return layers.ErrNotDir
		case !sn.isDir() && dn.isDir():
			return layers.ErrIsDir
		case sn.isDir() && len(dn.children) > 0:
			return layers.ErrNotEmpty
		case sn.isDir():
			d.nlink--
		default:
			dn.nlink--
		}
	}
	delete(sp.children, src.name)
	d.children[name] = sn
	if sn.isDir() && sp != d {
		sp.nlink--
		d.nlink++
		sn.parent = d
	}
	return nil
}

// compareTree checks that the staging tree matches the model exactly.
func compareTree(t *testing.T, tr *layers.Tree, m *model, where string, contents bool) {
	t.Helper()
	ctx := context.Background()
	var walk func(d *mnode, path string)
	walk = func(d *mnode, path string) {
		var got []layers.Dirent
		if err := tr.ReadDir(ctx, d.ino, "", func(de layers.Dirent) bool { got = append(got, de); return true }); err != nil {
			t.Fatalf("%s: readdir %s: %v", where, path, err)
		}
		names := make([]string, 0, len(d.children))
		for n := range d.children {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(got) != len(names) {
			t.Fatalf("%s: readdir %s: got %d entries %v, want %v", where, path, len(got), got, names)
		}
		for i, n := range names {
			c := d.children[n]
			if got[i].Name != n || got[i].Ino != c.ino || got[i].Mode != c.mode&syscall.S_IFMT {
				t.Fatalf("%s: readdir %s entry %d: got %+v, want %s ino %d mode %o", where, path, i, got[i], n, c.ino, c.mode)
			}
			a, err := tr.Lookup(ctx, d.ino, n)
			if err != nil {
				t.Fatalf("%s: lookup %s/%s: %v", where, path, n, err)
			}
			compareNode(t, tr, c, a, where+": "+path+"/"+n, contents)
			if c.isDir() {
				walk(c, path+"/"+n)
			}
		}
	}
	a, err := tr.GetAttr(ctx, layers.RootIno)
	if err != nil {
		t.Fatalf("%s: getattr root: %v", where, err)
	}
	compareNode(t, tr, m.root, a, where+": /", contents)
	walk(m.root, "")
}

func compareNode(t *testing.T, tr *layers.Tree, n *mnode, a layers.Attr, where string, contents bool) {
	t.Helper()
	ctx := context.Background()
	if a.Ino != n.ino || a.Mode != n.mode || a.Uid != n.uid || a.Gid != n.gid || a.Nlink != n.nlink {
		t.Fatalf("%s: attr got ino %d mode %o uid %d gid %d nlink %d, want ino %d mode %o uid %d gid %d nlink %d",
			where, a.Ino, a.Mode, a.Uid, a.Gid, a.Nlink, n.ino, n.mode, n.uid, n.gid, n.nlink)
	}
	switch n.mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		if a.Size != int64(len(n.data)) {
			t.Fatalf("%s: size %d, want %d", where, a.Size, len(n.data))
		}
		if !contents {
			break
		}
		buf := make([]byte, len(n.data)+100)
		got, err := tr.ReadAt(ctx, n.ino, buf, 0)
		if err != nil || got != len(n.data) || !bytes.Equal(buf[:got], n.data) {
			t.Fatalf("%s: read %d bytes, err %v, equal %v; want %d bytes", where, got, err, bytes.Equal(buf[:got], n.data), len(n.data))
		}
		ext, err := tr.Extents(ctx, n.ino, 0, a.Size)
		if err != nil {
			t.Fatalf("%s: extents: %v", where, err)
		}
		var pos int64
		for _, x := range ext {
			if x.Off != pos {
				t.Fatalf("%s: extents not contiguous: %+v", where, ext)
			}
			if x.Hole && !chunk.IsZero(n.data[x.Off:x.Off+x.Len]) {
				t.Fatalf("%s: extent %+v reported as hole holds data", where, x)
			}
			pos += x.Len
		}
		if pos != a.Size {
			t.Fatalf("%s: extents cover %d of %d bytes", where, pos, a.Size)
		}
	case syscall.S_IFLNK:
		target, err := tr.Readlink(ctx, n.ino)
		if err != nil || target != n.target {
			t.Fatalf("%s: readlink %q, %v; want %q", where, target, err, n.target)
		}
	}
	names, err := tr.ListXattr(ctx, n.ino)
	if err != nil {
		t.Fatalf("%s: listxattr: %v", where, err)
	}
	if len(names) != len(n.xattrs) {
		t.Fatalf("%s: xattrs %v, want %v", where, names, n.xattrs)
	}
	for _, x := range names {
		v, err := tr.GetXattr(ctx, n.ino, x)
		if err != nil || !bytes.Equal(v, n.xattrs[x]) {
			t.Fatalf("%s: xattr %s = %q, %v; want %q", where, x, v, err, n.xattrs[x])
		}
	}
}
