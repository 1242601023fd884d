package layers

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"github.com/strata-backup/strata/store/chunk"
)

// inode is the stored form of an inode's attributes. Directories also
// record their parent (a directory has exactly one), used to refuse moving
// a directory under itself.
type inode struct {
	Attr
	Parent Ino
	Target string // symlink target
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }
func isReg(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFREG }
func isLnk(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFLNK }

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func readTime(b []byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint32(b[8:]))).UTC()
}

const inodeFixed = 4*3 + 8 + 4 + 8 + 12*3 + 8

func (n *inode) encode() []byte {
	b := make([]byte, 0, 1+inodeFixed+len(n.Target))
	b = append(b, valLive)
	b = binary.BigEndian.AppendUint32(b, n.Mode)
	b = binary.BigEndian.AppendUint32(b, n.Uid)
	b = binary.BigEndian.AppendUint32(b, n.Gid)
	b = binary.BigEndian.AppendUint64(b, uint64(n.Size))
	b = binary.BigEndian.AppendUint32(b, n.Nlink)
	b = binary.BigEndian.AppendUint64(b, n.Rdev)
	b = appendTime(b, n.Atime)
	b = appendTime(b, n.Mtime)
	b = appendTime(b, n.Ctime)
	b = binary.BigEndian.AppendUint64(b, uint64(n.Parent))
	if isReg(n.Mode) && n.Holes > 0 {
		// Regular files have no Target: the tail holds Holes, and a
		// record without it has none known.
		return binary.BigEndian.AppendUint64(b, uint64(n.Holes))
	}
	return append(b, n.Target...)
}

func decodeInode(ino Ino, b []byte) (inode, error) {
	var n inode
	if len(b) < inodeFixed {
		return n, fmt.Errorf("decode inode %d: short record (%d bytes)", ino, len(b))
	}
	n.Ino = ino
	n.Mode = binary.BigEndian.Uint32(b)
	n.Uid = binary.BigEndian.Uint32(b[4:])
	n.Gid = binary.BigEndian.Uint32(b[8:])
	n.Size = int64(binary.BigEndian.Uint64(b[12:]))
	n.Nlink = binary.BigEndian.Uint32(b[20:])
	n.Rdev = binary.BigEndian.Uint64(b[24:])
	n.Atime = readTime(b[32:])
	n.Mtime = readTime(b[44:])
	n.Ctime = readTime(b[56:])
	n.Parent = Ino(binary.BigEndian.Uint64(b[68:]))
	if isReg(n.Mode) {
		if len(b) == inodeFixed+8 {
			n.Holes = int64(binary.BigEndian.Uint64(b[inodeFixed:]))
		}
		return n, nil
	}
	n.Target = string(b[76:])
	return n, nil
}

func encodeDirent(child Ino, mode uint32) []byte {
	b := make([]byte, 0, 13)
	b = append(b, valLive)
	b = binary.BigEndian.AppendUint64(b, uint64(child))
	return binary.BigEndian.AppendUint32(b, mode&syscall.S_IFMT)
}

func decodeDirent(name string, b []byte) (Dirent, error) {
	if len(b) != 12 {
		return Dirent{}, fmt.Errorf("decode dirent %q: bad length %d", name, len(b))
	}
	return Dirent{Name: name, Ino: Ino(binary.BigEndian.Uint64(b)), Mode: binary.BigEndian.Uint32(b[8:])}, nil
}

// extent is one stored run of file data; the gaps between extents are
// holes. Extent maps are sorted by Off and never overlap.
type extent struct {
	Off int64
	Len int64
	ID  chunk.ID
}

func encodeExtents(es []extent) []byte {
	b := make([]byte, 0, 1+len(es)*44)
	b = append(b, valLive)
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.Off))
		b = binary.AppendUvarint(b, uint64(e.Len))
		b = append(b, e.ID[:]...)
	}
	return b
}

func decodeExtents(b []byte) ([]extent, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("decode extent map: bad count")
	}
	b = b[k:]
	es := make([]extent, 0, n)
	for i := uint64(0); i < n; i++ {
		off, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return nil, fmt.Errorf("decode extent map: bad offset in extent %d", i)
		}
		l, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 || len(b) < k1+k2+32 {
			return nil, fmt.Errorf("decode extent map: truncated extent %d", i)
		}
		var e extent
		e.Off, e.Len = int64(off), int64(l)
		copy(e.ID[:], b[k1+k2:])
		es = append(es, e)
		b = b[k1+k2+32:]
	}
	return es, nil
}

func extentIDs(es []extent) []chunk.ID {
	ids := make([]chunk.ID, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}
