package fs

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/strata-backup/strata/layers"
)

// POSIX ACLs travel as the system.posix_acl_access/default xattrs; layers
// stores them like any other xattr. Keeping the mode and the access ACL in
// step (setfacl sets the mode, chmod the ACL) and inheritance of a
// directory's default ACL by new inodes are ours, with or without the
// kernel's ACL support; rsync -A relies on the first: it sets the access
// ACL and trusts it to set the mode. With CAP_POSIX_ACL (mounts other
// users can enter, see mount) the kernel also checks permissions against
// the ACLs.

const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"

	aclVersion  = 2
	aclUserObj  = 0x01
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
)

// aclEntry is one entry of the xattr form: tag, perm, id (little endian).
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

func parseACL(b []byte) ([]aclEntry, bool) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, false
	}
	var es []aclEntry
	for p := b[4:]; len(p) > 0; p = p[8:] {
		es = append(es, aclEntry{binary.LittleEndian.Uint16(p), binary.LittleEndian.Uint16(p[2:]), binary.LittleEndian.Uint32(p[4:])})
	}
	return es, true
}

func formatACL(es []aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range es {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// createMasq applies a create mode to an inherited ACL as POSIX does:
// owner, group (mask if present) and other entries are limited by the
// mode, and the mode takes the resulting permissions. extended reports
// whether the ACL says more than the mode (then it is stored).
func createMasq(es []aclEntry, mode uint32) (out []aclEntry, newMode uint32, extended bool) {
	out = append([]aclEntry(nil), es...)
	var group, mask *aclEntry
	var u, o uint32
	for i := range out {
		e := &out[i]
		switch e.tag {
		case aclUserObj:
			e.perm &= uint16(mode>>6) & 7
			u = uint32(e.perm)
		case aclOther:
			e.perm &= uint16(mode) & 7
			o = uint32(e.perm)
		case aclGroupObj:
			group = e
		case aclMask:
			mask = e
			extended = true
		default:
			extended = true
		}
	}
	g := group
	if mask != nil {
		g = mask
	}
	var gp uint32
	if g != nil {
		g.perm &= uint16(mode>>3) & 7
		gp = uint32(g.perm)
	}
	return out, mode&^0o777 | u<<6 | gp<<3 | o, extended
}

// inherit computes the mode and ACL xattrs of a new inode in parent: with
// a default ACL on parent, POSIX inheritance (the umask is ignored);
// without, the mode less the umask. Applying the umask is idempotent, so
// it does not matter whether the kernel already did.
func (f *treeFS) inherit(ctx context.Context, parent layers.Ino, mode, umask uint32, dir bool) (uint32, map[string][]byte, error) {
	def, err := f.tree.GetXattr(ctx, parent, aclDefault)
	if errors.Is(err, layers.ErrNoXattr) || errors.Is(err, layers.ErrNotFound) {
		return mode &^ (umask & 0o777), nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	es, ok := parseACL(def)
	if !ok || len(es) == 0 {
		return mode &^ (umask & 0o777), nil, nil
	}
	xattrs := map[string][]byte{}
	if dir {
		xattrs[aclDefault] = def
	}
	acc, newMode, extended := createMasq(es, mode)
	if extended {
		xattrs[aclAccess] = formatACL(acc)
	}
	return newMode, xattrs, nil
}

// setInherited stores the inherited ACLs on a new inode.
func (f *treeFS) setInherited(ctx context.Context, ino layers.Ino, xattrs map[string][]byte) error {
	for name, v := range xattrs {
		if err := f.st.SetXattr(ctx, ino, name, v, 0); err != nil {
			return err
		}
	}
	return nil
}

// aclModeBits returns the permission bits an access ACL implies: owner
// from user_obj, group from the mask (or group_obj without one), other.
func aclModeBits(es []aclEntry) (bits uint32, extended bool) {
	var u, g, o, m uint32
	hasMask := false
	for _, e := range es {
		p := uint32(e.perm & 7)
		switch e.tag {
		case aclUserObj:
			u = p
		case aclGroupObj:
			g = p
		case aclOther:
			o = p
		case aclMask:
			m, hasMask, extended = p, true, true
		default:
			extended = true
		}
	}
	if hasMask {
		g = m
	}
	return u<<6 | g<<3 | o, extended
}

// setAccessACL stores an access ACL and sets the mode from it, as a local
// filesystem does (rsync -A relies on it and skips its chmod); it reports
// whether the mode changed. An ACL that says no more than the mode is not
// stored.
func (f *treeFS) setAccessACL(ctx context.Context, ino layers.Ino, value []byte, flags uint32) (bool, error) {
	es, ok := parseACL(value)
	if !ok {
		return false, layers.ErrInvalid
	}
	a, err := f.tree.GetAttr(ctx, ino)
	if err != nil {
		return false, err
	}
	bits, extended := aclModeBits(es)
	if extended {
		err = f.st.SetXattr(ctx, ino, aclAccess, value, flags)
	} else if err = f.st.RemoveXattr(ctx, ino, aclAccess); errors.Is(err, layers.ErrNoXattr) {
		err = nil
	}
	if err != nil {
		return false, err
	}
	mode := a.Mode&0o7000 | bits
	if mode == a.Mode&0o7777 {
		return false, nil
	}
	_, err = f.st.SetAttr(ctx, ino, layers.SetAttr{Mode: &mode})
	return err == nil, err
}

// chmodACL brings an existing access ACL in line with a new mode, as
// chmod(2) does: owner, mask (or group_obj) and other follow the mode.
func (f *treeFS) chmodACL(ctx context.Context, ino layers.Ino, mode uint32) error {
	v, err := f.tree.GetXattr(ctx, ino, aclAccess)
	if errors.Is(err, layers.ErrNoXattr) {
		return nil
	}
	if err != nil {
		return err
	}
	es, ok := parseACL(v)
	if !ok {
		return nil
	}
	hasMask := false
	for _, e := range es {
		hasMask = hasMask || e.tag == aclMask
	}
	for i := range es {
		switch e := &es[i]; {
		case e.tag == aclUserObj:
			e.perm = uint16(mode>>6) & 7
		case e.tag == aclMask || (e.tag == aclGroupObj && !hasMask):
			e.perm = uint16(mode>>3) & 7
		case e.tag == aclOther:
			e.perm = uint16(mode) & 7
		}
	}
	nv := formatACL(es)
	if string(nv) == string(v) {
		return nil
	}
	return f.st.SetXattr(ctx, ino, aclAccess, nv, 0)
}
