package layers

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/strata-backup/strata/store/chunk"
)

// staging is the implementation behind Staging.
type staging struct {
	v    *volume
	tree *Tree
}

// Tree returns the read view of the staging head (reads see every write
// that returned).
func (s *Staging) Tree() *Tree { return s.tree }

// mutation is one metadata change of the staging layer.
type mutation struct {
	*writer
	rd      *rtx // reads see the change's own writes
	v       *volume
	now     time.Time
	nextIno uint64
	applied []func() // run once the change is visible, still under v.mu
	after   []func() // run once the change is visible, outside the locks
	flushed []func() // run once the change is in badger
}

func (m *mutation) inode(ino Ino) (inode, error) {
	n, _, err := m.v.getInode(m.rd, ino, m.seq)
	return n, err
}

func (m *mutation) dir(ino Ino) (inode, error) {
	n, err := m.inode(ino)
	if err == nil && !isDir(n.Mode) {
		err = ErrNotDir
	}
	return n, err
}

func (m *mutation) dirent(parent Ino, name string) (Dirent, error) {
	return m.v.getDirent(m.rd, parent, name, m.seq)
}

// child returns directory parent and the inode its entry name points to,
// as removals need both.
func (m *mutation) child(parent Ino, name string) (p, n inode, err error) {
	if p, err = m.dir(parent); err != nil {
		return p, n, err
	}
	d, err := m.dirent(parent, name)
	if err != nil {
		return p, n, err
	}
	n, err = m.inode(d.Ino)
	return p, n, err
}

func (m *mutation) putInode(n *inode) error {
	return m.put(rkIno(recAttr, uint64(n.Ino)), n.encode())
}

func (m *mutation) putDirent(parent Ino, name string, child Ino, mode uint32) error {
	return m.put(rkName(recDirent, uint64(parent), name), encodeDirent(child, mode))
}

func (m *mutation) delDirent(parent Ino, name string) error {
	return m.tombstone(rkName(recDirent, uint64(parent), name))
}

func (m *mutation) alloc() Ino {
	ino := Ino(m.nextIno)
	m.nextIno++
	return ino
}

func (m *mutation) touchDir(n *inode) {
	n.Mtime, n.Ctime = m.now, m.now
}

// mutate runs fn as one atomic change of the staging layer. It holds the
// volume's commit lock shared (so a commit sees all of it or none) and its
// metadata lock (so changes apply one at a time, without conflicts).
//
// A change is not given up when ctx is done: it is short and all or
// nothing, while giving up turns a signal the caller got (the Go runtime
// preempting a thread of it, say) into EINTR from rename(2) or mkdir(2),
// which programs do not expect from a local filesystem and rarely retry.
func (s *Staging) mutate(_ context.Context, fn func(m *mutation) error) error {
	v := s.v
	v.commitMu.RLock()
	defer v.commitMu.RUnlock()
	done, err := v.beginChange()
	if err != nil {
		return err
	}
	defer done()
	return v.mutateLocked(fn)
}

// mutateLocked is mutate for callers that hold commitMu in either mode, or
// that change nothing a commit must see whole (a file's flush).
//
// The change reads a badger snapshot under the pending writes and, if fn
// succeeds, lands in pending all at once (pending.go).
func (v *volume) mutateLocked(fn func(m *mutation) error) error {
	if v.removed.Load() {
		return fmt.Errorf("volume %s: %w", v.rec.Name, ErrUnknownVolume)
	}
	v.mu.Lock()
	b := &batch{}
	var m *mutation
	err := v.pend.view(func(rd *rtx) error {
		rd.b = b
		m = &mutation{writer: &writer{b: b, vid: v.id, seq: v.seq.Load()}, rd: rd,
			v: v, now: v.r.now(), nextIno: v.nextIno}
		if err := fn(m); err != nil {
			return err
		}
		// Inode numbers are reserved in blocks: the stored counter is a
		// limit, so a create does not rewrite it (a crash skips some).
		if m.nextIno > v.inoLimit {
			m.setKey(stateKey(v.id), encodeState(m.nextIno+inoReserve, m.seq))
		}
		return nil
	})
	if err == nil {
		v.noteChange(m.now)
		full := v.pend.apply(b, m.flushed)
		// Counted once in pending: a durable point that read the count
		// before the apply would otherwise flush without this change and
		// still see the count it expects, and drop the unsaved marker.
		v.unsaved.landed.Add(1)
		if full {
			// Badger takes a batch in one transaction: past the hard
			// limit, this change waits for it (and so do the next ones,
			// behind v.mu).
			if ferr := v.pend.flush(false); ferr != nil {
				v.r.log.Warn("metadata flush", "volume", v.rec.Name, "err", ferr)
			}
		}
		if m.nextIno > v.inoLimit {
			v.inoLimit = m.nextIno + inoReserve
		}
		v.nextIno = m.nextIno
		for _, f := range m.applied {
			f()
		}
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	for _, f := range m.after {
		f()
	}
	return nil
}

// MaxNameLen is the longest directory entry name, as Linux's NAME_MAX.
const MaxNameLen = 255

// inoReserve is how many inode numbers one write of the counter reserves.
const inoReserve = 1024

// CheckName tells whether name can be a directory entry: ErrInvalid for
// "", ".", ".." or a name with '/' or NUL, ErrNameTooLong past
// MaxNameLen bytes.
func CheckName(name string) error {
	switch {
	case len(name) > MaxNameLen:
		return ErrNameTooLong
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return ErrInvalid
	}
	return nil
}

// create makes a new inode named name in parent.
func (s *Staging) create(ctx context.Context, op string, parent Ino, name string, n inode) (Attr, error) {
	if err := CheckName(name); err != nil {
		return Attr{}, fmt.Errorf("%s %q: %w", op, name, err)
	}
	err := s.mutate(ctx, func(m *mutation) error {
		p, err := m.dir(parent)
		if err != nil {
			return err
		}
		if _, err := m.dirent(parent, name); err == nil {
			return ErrExists
		} else if !isNotFound(err) {
			return err
		}
		n.Ino = m.alloc()
		n.Atime, n.Mtime, n.Ctime = m.now, m.now, m.now
		// Every inode records the directory it was made in (for files
		// only a hint, as links come and go: damage reports name paths
		// with it, see ChunkUsers).
		n.Parent = parent
		if isDir(n.Mode) {
			p.Nlink++
		}
		m.touchDir(&p)
		if err := m.putInode(&n); err != nil {
			return err
		}
		if err := m.putDirent(parent, name, n.Ino, n.Mode); err != nil {
			return err
		}
		return m.putInode(&p)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	return n.Attr, nil
}

// Create makes a regular file, fifo, socket or device node (mode carries
// the type bits; rdev for devices). Errors: ErrExists, ErrNotFound (parent).
func (s *Staging) Create(ctx context.Context, parent Ino, name string, mode, uid, gid uint32, rdev uint64) (Attr, error) {
	switch mode & syscall.S_IFMT {
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	default:
		return Attr{}, fmt.Errorf("create %q: type %o: %w", name, mode&syscall.S_IFMT, ErrInvalid)
	}
	if mode&syscall.S_IFMT != syscall.S_IFCHR && mode&syscall.S_IFMT != syscall.S_IFBLK {
		rdev = 0
	}
	return s.create(ctx, "create", parent, name, inode{Attr: Attr{Mode: mode, Uid: uid, Gid: gid, Nlink: 1, Rdev: rdev}})
}

// Mkdir makes a directory.
func (s *Staging) Mkdir(ctx context.Context, parent Ino, name string, mode, uid, gid uint32) (Attr, error) {
	return s.create(ctx, "mkdir", parent, name, inode{Attr: Attr{Mode: syscall.S_IFDIR | mode&0o7777, Uid: uid, Gid: gid, Nlink: 2}})
}

// Symlink makes a symbolic link.
func (s *Staging) Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Attr, error) {
	if target == "" || len(target) > 4095 {
		return Attr{}, fmt.Errorf("symlink %q: target length %d: %w", name, len(target), ErrInvalid)
	}
	return s.create(ctx, "symlink", parent, name, inode{Attr: Attr{Mode: syscall.S_IFLNK | 0o777, Uid: uid, Gid: gid,
		Nlink: 1, Size: int64(len(target))}, Target: target})
}

// Link makes a hard link to ino (not a directory).
func (s *Staging) Link(ctx context.Context, ino Ino, parent Ino, name string) (Attr, error) {
	if err := CheckName(name); err != nil {
		return Attr{}, fmt.Errorf("link %q: %w", name, err)
	}
	var out inode
	err := s.mutate(ctx, func(m *mutation) error {
		p, err := m.dir(parent)
		if err != nil {
			return err
		}
		n, err := m.inode(ino)
		if err != nil {
			return err
		}
		if isDir(n.Mode) {
			return ErrIsDir
		}
		if _, err := m.dirent(parent, name); err == nil {
			return ErrExists
		} else if !isNotFound(err) {
			return err
		}
		n.Nlink++
		n.Ctime = m.now
		if n.Nlink == 1 {
			delete(m.v.orphans, ino) // v.mu is held
			m.delKey(orphanKey(m.vid, ino))
		}
		m.touchDir(&p)
		if err := m.putInode(&n); err != nil {
			return err
		}
		if err := m.putDirent(parent, name, ino, n.Mode); err != nil {
			return err
		}
		out = n
		return m.putInode(&p)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("link %d as %q in %d: %w", ino, name, parent, err)
	}
	if f := s.v.lookupFile(ino); f != nil {
		f.overlay(&out.Attr)
	}
	return out.Attr, nil
}

// dropInode removes an inode whose last link went: its attributes, extent
// map, xattrs and any buffered writes.
func (m *mutation) dropInode(n *inode) error {
	if err := m.tombstone(rkIno(recAttr, uint64(n.Ino))); err != nil {
		return err
	}
	if isReg(n.Mode) {
		m.forgetLost(n.Ino)
		es, eseq, err := m.v.getExtents(m.rd, n.Ino, m.seq)
		if err != nil {
			return err
		}
		if eseq != 0 {
			if err := m.tombstone(rkIno(recExtents, uint64(n.Ino))); err != nil {
				return err
			}
		}
		if eseq == m.seq && len(es) > 0 {
			ids := extentIDs(es)
			// Released once the tombstone is in the index (see commitFileOnce).
			m.flushed = append(m.flushed, func() { m.v.releaseIDs(ids) })
		}
		if f := m.v.lookupFile(n.Ino); f != nil {
			f.mu.Lock()
			marked := f.marked
			f.mu.Unlock()
			if marked {
				m.delKey(unflushedKey(m.vid, n.Ino))
			}
		}
		ino := n.Ino
		m.after = append(m.after, func() {
			if f := m.v.lookupFile(ino); f != nil {
				f.dataMu.Lock()
				f.forget()
				f.dataMu.Unlock()
			}
		})
	}
	var names []string
	err := scanNames(m.rd, m.vid, rkNamePrefix(recXattr, uint64(n.Ino)), m.seq, "", false,
		func(name string, _ []byte) (bool, error) {
			names = append(names, name)
			return true, nil
		})
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := m.tombstone(rkName(recXattr, uint64(n.Ino), name)); err != nil {
			return err
		}
	}
	return nil
}

func (v *volume) releaseIDs(ids []chunk.ID) {
	if err := v.r.cs.Release(context.Background(), ids); err != nil {
		v.r.log.Warn("release chunks", "volume", v.rec.Name, "err", err)
	}
}

// unlinkInode drops one link of n (not a directory). An inode losing its
// last link while a handle holds it stays, with nlink 0, until Unhold.
func (m *mutation) unlinkInode(n *inode) error {
	n.Nlink--
	n.Ctime = m.now
	if n.Nlink == 0 {
		if m.v.holds[n.Ino] == 0 {
			return m.dropInode(n)
		}
		m.v.orphans[n.Ino] = true // v.mu is held; dropOrphan rechecks nlink
		// Held only in memory: a crash leaves Open to drop it.
		m.setKey(orphanKey(m.vid, n.Ino), nil)
	}
	return m.putInodeKeepingFile(n)
}

// Hold marks ino as open by a file handle (fs calls it on open and create):
// if its last link goes while it is held, the inode stays readable and
// writable, with nlink 0, until the matching Unhold drops it. Holds live
// in memory; Close drops inodes left unlinked.
func (s *Staging) Hold(ino Ino) {
	v := s.v
	v.mu.Lock()
	v.holds[ino]++
	v.mu.Unlock()
}

// Unhold releases one Hold (fs calls it when the handle is released); the
// last one of an unlinked inode drops it.
func (s *Staging) Unhold(ctx context.Context, ino Ino) error {
	v := s.v
	v.mu.Lock()
	if v.holds[ino] > 0 {
		v.holds[ino]--
	}
	drop := v.holds[ino] == 0 && v.orphans[ino]
	if v.holds[ino] == 0 {
		delete(v.holds, ino)
	}
	v.mu.Unlock()
	if !drop {
		return nil
	}
	return s.mutate(ctx, func(m *mutation) error { return m.dropOrphan(ino) })
}

// dropOrphan drops ino if it is still unlinked and no longer held.
func (m *mutation) dropOrphan(ino Ino) error {
	if m.v.holds[ino] > 0 || !m.v.orphans[ino] {
		return nil
	}
	n, err := m.inode(ino)
	if err != nil && !isNotFound(err) {
		return err
	}
	delete(m.v.orphans, ino) // v.mu is held
	m.delKey(orphanKey(m.vid, ino))
	if err != nil || n.Nlink > 0 {
		return nil
	}
	return m.dropInode(&n)
}

// dropOrphans drops every unlinked inode, held or not (Close).
func (v *volume) dropOrphans() error {
	v.mu.Lock()
	inos := make([]Ino, 0, len(v.orphans))
	for ino := range v.orphans {
		inos = append(inos, ino)
		delete(v.holds, ino)
	}
	v.mu.Unlock()
	for _, ino := range inos {
		if err := v.mutateLocked(func(m *mutation) error { return m.dropOrphan(ino) }); err != nil {
			return err
		}
	}
	return nil
}

// emptyDir reports whether directory ino has no entries.
func (m *mutation) emptyDir(ino Ino) (bool, error) {
	empty := true
	err := scanNames(m.rd, m.vid, rkNamePrefix(recDirent, uint64(ino)), m.seq, "", false,
		func(string, []byte) (bool, error) {
			empty = false
			return false, nil
		})
	return empty, err
}

// Unlink removes a non-directory entry.
func (s *Staging) Unlink(ctx context.Context, parent Ino, name string) error {
	err := s.mutate(ctx, func(m *mutation) error {
		p, n, err := m.child(parent, name)
		if err != nil {
			return err
		}
		if isDir(n.Mode) {
			return ErrIsDir
		}
		if err := m.delDirent(parent, name); err != nil {
			return err
		}
		if err := m.unlinkInode(&n); err != nil {
			return err
		}
		m.touchDir(&p)
		return m.putInode(&p)
	})
	if err != nil {
		return fmt.Errorf("unlink %q in %d: %w", name, parent, err)
	}
	return nil
}

// Rmdir removes an empty directory. Errors: ErrNotEmpty.
func (s *Staging) Rmdir(ctx context.Context, parent Ino, name string) error {
	err := s.mutate(ctx, func(m *mutation) error {
		p, n, err := m.child(parent, name)
		if err != nil {
			return err
		}
		if !isDir(n.Mode) {
			return ErrNotDir
		}
		if empty, err := m.emptyDir(n.Ino); err != nil {
			return err
		} else if !empty {
			return ErrNotEmpty
		}
		if err := m.delDirent(parent, name); err != nil {
			return err
		}
		if err := m.dropInode(&n); err != nil {
			return err
		}
		p.Nlink--
		m.touchDir(&p)
		return m.putInode(&p)
	})
	if err != nil {
		return fmt.Errorf("rmdir %q in %d: %w", name, parent, err)
	}
	return nil
}

// isAncestor reports whether dir a is dir b or one of b's ancestors.
func (m *mutation) isAncestor(a, b Ino) (bool, error) {
	for i := 0; i < 1<<16; i++ {
		if a == b {
			return true, nil
		}
		if b == RootIno {
			return false, nil
		}
		n, err := m.inode(b)
		if err != nil {
			return false, err
		}
		b = n.Parent
	}
	return false, fmt.Errorf("directory parent chain too long: %w", ErrInvalid)
}

// Rename moves an entry, replacing a target as rename(2) does unless flags
// has RenameNoReplace; RenameExchange swaps the two.
func (s *Staging) Rename(ctx context.Context, parent Ino, name string, newParent Ino, newName string, flags uint32) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("rename %q: %w", name, err)
	}
	if err := CheckName(newName); err != nil {
		return fmt.Errorf("rename to %q: %w", newName, err)
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("rename %q: flags %#x: %w", name, flags, ErrInvalid)
	}
	err := s.mutate(ctx, func(m *mutation) error {
		pp, err := m.dir(parent)
		if err != nil {
			return err
		}
		np := &pp
		var npv inode
		if newParent != parent {
			if npv, err = m.dir(newParent); err != nil {
				return err
			}
			np = &npv
		}
		src, err := m.dirent(parent, name)
		if err != nil {
			return err
		}
		dst, derr := m.dirent(newParent, newName)
		if derr != nil && !isNotFound(derr) {
			return derr
		}
		exists := derr == nil
		if flags&RenameExchange != 0 {
			if !exists {
				return ErrNotFound
			}
			return m.exchange(&pp, np, name, newName, src, dst)
		}
		if exists && flags&RenameNoReplace != 0 {
			return ErrExists
		}
		if exists && dst.Ino == src.Ino {
			return nil // same inode (or same entry): rename(2) does nothing
		}
		sn, err := m.inode(src.Ino)
		if err != nil {
			return err
		}
		srcDir := isDir(sn.Mode)
		if srcDir && newParent != parent {
			if loop, err := m.isAncestor(sn.Ino, newParent); err != nil {
				return err
			} else if loop {
				return ErrInvalid
			}
		}
		if exists {
			dn, err := m.inode(dst.Ino)
			if err != nil {
				return err
			}
			switch {
			case srcDir && !isDir(dn.Mode):
				return ErrNotDir
			case !srcDir && isDir(dn.Mode):
				return ErrIsDir
			case srcDir:
				if empty, err := m.emptyDir(dn.Ino); err != nil {
					return err
				} else if !empty {
					return ErrNotEmpty
				}
				if err := m.dropInode(&dn); err != nil {
					return err
				}
				np.Nlink--
			default:
				if err := m.unlinkInode(&dn); err != nil {
					return err
				}
			}
		}
		if err := m.delDirent(parent, name); err != nil {
			return err
		}
		if err := m.putDirent(newParent, newName, sn.Ino, sn.Mode); err != nil {
			return err
		}
		if srcDir && newParent != parent {
			pp.Nlink--
			np.Nlink++
		}
		if newParent != parent {
			sn.Parent = newParent
		}
		sn.Ctime = m.now
		if err := m.putInode(&sn); err != nil {
			return err
		}
		m.touchDir(&pp)
		m.touchDir(np)
		if err := m.putInode(&pp); err != nil {
			return err
		}
		if np != &pp {
			return m.putInode(np)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rename %q in %d to %q in %d: %w", name, parent, newName, newParent, err)
	}
	return nil
}

// exchange swaps two entries (RenameExchange).
func (m *mutation) exchange(pp, np *inode, name, newName string, src, dst Dirent) error {
	if src.Ino == dst.Ino {
		return nil
	}
	sn, err := m.inode(src.Ino)
	if err != nil {
		return err
	}
	dn, err := m.inode(dst.Ino)
	if err != nil {
		return err
	}
	if pp.Ino != np.Ino {
		if isDir(sn.Mode) {
			if loop, err := m.isAncestor(sn.Ino, np.Ino); err != nil || loop {
				return orInvalid(err)
			}
		}
		if isDir(dn.Mode) {
			if loop, err := m.isAncestor(dn.Ino, pp.Ino); err != nil || loop {
				return orInvalid(err)
			}
		}
		if isDir(sn.Mode) {
			pp.Nlink--
			np.Nlink++
			sn.Parent = np.Ino
		}
		if isDir(dn.Mode) {
			np.Nlink--
			pp.Nlink++
			dn.Parent = pp.Ino
		}
	}
	if err := m.putDirent(pp.Ino, name, dn.Ino, dn.Mode); err != nil {
		return err
	}
	if err := m.putDirent(np.Ino, newName, sn.Ino, sn.Mode); err != nil {
		return err
	}
	sn.Ctime, dn.Ctime = m.now, m.now
	m.touchDir(pp)
	m.touchDir(np)
	for _, n := range []*inode{&sn, &dn, pp} {
		if err := m.putInode(n); err != nil {
			return err
		}
	}
	if np != pp {
		return m.putInode(np)
	}
	return nil
}

func orInvalid(err error) error {
	if err != nil {
		return err
	}
	return ErrInvalid
}

// SetAttr changes attributes; Size truncates or extends (sparse).
func (s *Staging) SetAttr(ctx context.Context, ino Ino, in SetAttr) (Attr, error) {
	v := s.v
	v.commitMu.RLock()
	defer v.commitMu.RUnlock()
	done, err := v.beginChange()
	if err != nil {
		return Attr{}, fmt.Errorf("setattr %d: %w", ino, err)
	}
	defer done()
	var f *openFile
	if in.Size != nil {
		if *in.Size < 0 {
			return Attr{}, fmt.Errorf("setattr %d: size %d: %w", ino, *in.Size, ErrInvalid)
		}
		f, err = v.openFileFor(ctx, ino, *in.Size == 0)
		if err != nil {
			return Attr{}, fmt.Errorf("setattr %d: %w", ino, err)
		}
		f.mu.Lock()
		same := f.size == *in.Size
		f.mu.Unlock()
		if !same {
			err = f.truncate(ctx, *in.Size, v.r.now())
		}
		f.dataMu.Unlock()
		if err != nil {
			return Attr{}, fmt.Errorf("setattr %d: %w", ino, err)
		}
	}
	var out inode
	err = v.mutateLocked(func(m *mutation) error {
		n, err := m.inode(ino)
		if err != nil {
			return err
		}
		if in.Mode != nil {
			n.Mode = n.Mode&syscall.S_IFMT | *in.Mode&0o7777
		}
		if in.Uid != nil {
			n.Uid = *in.Uid
		}
		if in.Gid != nil {
			n.Gid = *in.Gid
		}
		if in.Atime != nil {
			n.Atime = *in.Atime
		}
		if in.Mtime != nil {
			n.Mtime = *in.Mtime
		}
		n.Ctime = m.now
		// A dirty file's size and times live in its open file until the
		// flush: keep the two in step.
		if f == nil {
			f = v.lookupFile(ino)
		}
		if f != nil {
			f.mu.Lock()
			dirty := f.dirty
			f.marked = f.marked || dirty
			if !f.mtime.IsZero() {
				if in.Mtime != nil {
					f.mtime = *in.Mtime
				}
				f.ctime = m.now
				n.Size, n.Mtime = f.size, f.mtime
			}
			f.mu.Unlock()
			if dirty {
				if err := m.markUnflushed(ino); err != nil {
					return err
				}
			}
		}
		out = n
		return m.putInode(&n)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("setattr %d: %w", ino, err)
	}
	return out.Attr, nil
}

// WriteAt writes file data. It returns once the data is in the spool (not
// yet durable). Errors: ErrNoSpace.
func (s *Staging) WriteAt(ctx context.Context, ino Ino, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) < off {
		return 0, fmt.Errorf("write %d: offset %d: %w", ino, off, ErrInvalid)
	}
	v := s.v
	if err := v.r.checkSpace(fmt.Sprintf("write %d", ino)); err != nil {
		return 0, err
	}
	v.commitMu.RLock()
	defer v.commitMu.RUnlock()
	done, err := v.beginChange()
	if err != nil {
		return 0, fmt.Errorf("write %d: %w", ino, err)
	}
	defer done()
	f, err := v.openFileFor(ctx, ino, false)
	if err != nil {
		return 0, fmt.Errorf("write %d: %w", ino, err)
	}
	defer f.dataMu.Unlock()
	now := v.r.now()
	v.noteChange(now)
	n, err := f.writeAt(ctx, p, off, now)
	if err != nil {
		return n, fmt.Errorf("write %d: %w", ino, err)
	}
	return n, nil
}

// SetXattr sets an extended attribute (flags as setxattr(2): XATTR_CREATE,
// XATTR_REPLACE).
func (s *Staging) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	const xattrCreate, xattrReplace = 1, 2
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("set xattr %q: %w", name, ErrInvalid)
	}
	if len(name) > 255 {
		return fmt.Errorf("set xattr %q: %w", name, ErrRange)
	}
	if len(value) > 64<<10 {
		return fmt.Errorf("set xattr %q: value of %d bytes: %w", name, len(value), ErrRange)
	}
	err := s.mutate(ctx, func(m *mutation) error {
		n, err := m.inode(ino)
		if err != nil {
			return err
		}
		rk := rkName(recXattr, uint64(ino), name)
		_, _, gerr := getVersion(m.rd, m.vid, rk, m.seq)
		if gerr != nil && !isNotFound(gerr) {
			return gerr
		}
		switch {
		case flags&xattrCreate != 0 && gerr == nil:
			return ErrExists
		case flags&xattrReplace != 0 && gerr != nil:
			return ErrNoXattr
		}
		if err := m.put(rk, append([]byte{valLive}, value...)); err != nil {
			return err
		}
		n.Ctime = m.now
		return m.putInodeKeepingFile(&n)
	})
	if err != nil {
		return fmt.Errorf("set xattr %q of %d: %w", name, ino, err)
	}
	return nil
}

// putInodeKeepingFile writes n after a change that leaves size and mtime
// alone, keeping a dirty file's buffered values.
func (m *mutation) putInodeKeepingFile(n *inode) error {
	if f := m.v.lookupFile(n.Ino); f != nil {
		f.mu.Lock()
		dirty := f.dirty
		f.marked = f.marked || dirty
		if !f.mtime.IsZero() {
			f.ctime = n.Ctime
			n.Size, n.Mtime = f.size, f.mtime
		}
		f.mu.Unlock()
		if dirty {
			if err := m.markUnflushed(n.Ino); err != nil {
				return err
			}
		}
	}
	return m.putInode(n)
}

// markUnflushed records, in the transaction writing the attributes of a
// file whose data is still buffered, that the record runs ahead of the
// data: after a crash Open makes such a file visibly out of date.
func (m *mutation) markUnflushed(ino Ino) error {
	m.setKey(unflushedKey(m.vid, ino), nil)
	return nil
}

// RemoveXattr removes an extended attribute. Errors: ErrNoXattr.
func (s *Staging) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	err := s.mutate(ctx, func(m *mutation) error {
		n, err := m.inode(ino)
		if err != nil {
			return err
		}
		rk := rkName(recXattr, uint64(ino), name)
		if _, _, err := getVersion(m.rd, m.vid, rk, m.seq); err != nil {
			if isNotFound(err) {
				return ErrNoXattr
			}
			return err
		}
		if err := m.tombstone(rk); err != nil {
			return err
		}
		n.Ctime = m.now
		return m.putInodeKeepingFile(&n)
	})
	if err != nil {
		return fmt.Errorf("remove xattr %q of %d: %w", name, ino, err)
	}
	return nil
}

// FlushFile chunks and stores the buffered writes of ino (called on close);
// with durable, it also makes them survive a crash (fsync). Without
// durable the chunking happens in the background.
func (s *Staging) FlushFile(ctx context.Context, ino Ino, durable bool) error {
	v := s.v
	f := v.lookupFile(ino)
	if !durable {
		if f == nil {
			return nil
		}
		return v.r.enqueue(ctx, f)
	}
	if f != nil {
		f.dataMu.Lock()
		err := f.flush(ctx)
		f.dataMu.Unlock()
		if err != nil {
			return err
		}
	}
	return v.r.durable(ctx)
}

// durable makes everything written to the store and the index so far
// survive a crash.
func (r *Repo) durable(ctx context.Context) (err error) {
	marks := r.takeUnsaved()
	defer func() {
		if serr := r.saved(marks, err == nil); err == nil {
			err = serr
		}
	}()
	if err := r.cs.Flush(ctx); err != nil {
		return storeErr("flush store", err)
	}
	if err := r.flushPendingAll(); err != nil {
		return storeErr("flush metadata", err)
	}
	if err := r.db.Sync(); err != nil {
		return storeErr("sync index", err)
	}
	if fn := r.afterSync.Load(); fn != nil {
		(*fn)()
	}
	return nil
}

// Sync makes every write that returned durable.
func (s *Staging) Sync(ctx context.Context) error {
	if err := s.v.flushAll(ctx); err != nil {
		return err
	}
	return s.v.r.durable(ctx)
}
