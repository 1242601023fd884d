package layers

import (
	"encoding/binary"
)

// Key layout in the shared badger DB (all under "l/"):
//
//	l/v/<name>                          volume record (JSON)
//	l/n/<vid>                           volume state: next inode, staging seq
//	l/r/<vid><seq>                      revision record (JSON), seq big-endian
//	l/d/<vid><rk><^seq>                 versioned record rk at layer seq
//	l/t/<vid><seq><rk>                  "touched": rk was written in layer seq
//	l/w/<vid><ino>                      unflushed: attributes ahead of data (recover.go)
//	l/o/<vid><ino>                      unlinked inode held open (recover.go)
//	l/u/<vid>                           staging disk buffers unflushed blocks (lostblocks.go)
//	l/b/<vid>                           staging disk lost blocks in a crash (lostblocks.go)
//	l/c/<vid>                           since the last commit: first change, bytes added (clean close)
//
// vid is the volume's 8-byte id; rk is a record key: one type byte then
// the record's own key (see rec* below). ^seq is the bitwise complement of
// the layer seq, big-endian, so the versions of one record sort newest
// first and a Seek to rk+^R lands on the newest version at or below R.
const (
	pfxVolume   = "l/v/"
	pfxState    = "l/n/"
	pfxRevision = "l/r/"
	pfxData     = "l/d/"
	pfxTouched  = "l/t/"
	pfxChanged  = "l/c/"
)

// Record types: the first byte of a record key.
const (
	recAttr    = 'a' // ino                -> attrs
	recDirent  = 'd' // parent ino, name 0 -> child ino, type
	recExtents = 'e' // ino                -> extent map
	recXattr   = 'x' // ino, name 0        -> value
	recBlock   = 'b' // block index        -> chunk id
)

// Value flags: the first byte of every versioned value.
const (
	valTombstone = 0
	valLive      = 1
)

type volID [8]byte

func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// rkIno is the record key of a per-inode record (attrs, extents) or of a
// block (index).
func rkIno(rt byte, ino uint64) []byte {
	return be64([]byte{rt}, ino)
}

// rkName is the record key of a named record under an inode (dirent,
// xattr). Names never contain NUL, so the terminator keeps "a" < "ab" and
// separates the name from the version suffix.
func rkName(rt byte, ino uint64, name string) []byte {
	b := make([]byte, 0, 1+8+len(name)+1)
	b = be64(append(b, rt), ino)
	b = append(b, name...)
	return append(b, 0)
}

// rkNamePrefix is the common prefix of every named record under ino.
func rkNamePrefix(rt byte, ino uint64) []byte { return rkIno(rt, ino) }

func dataPrefix(vid volID, rk []byte) []byte {
	b := make([]byte, 0, len(pfxData)+8+len(rk)+8)
	b = append(b, pfxData...)
	b = append(b, vid[:]...)
	return append(b, rk...)
}

func verKey(vid volID, rk []byte, seq uint64) []byte {
	return be64(dataPrefix(vid, rk), ^seq)
}

func touchedKey(vid volID, seq uint64, rk []byte) []byte {
	b := make([]byte, 0, len(pfxTouched)+16+len(rk))
	b = append(b, pfxTouched...)
	b = append(b, vid[:]...)
	b = be64(b, seq)
	return append(b, rk...)
}

func touchedPrefix(vid volID, seq uint64) []byte {
	b := append([]byte(pfxTouched), vid[:]...)
	return be64(b, seq)
}

func stateKey(vid volID) []byte { return append([]byte(pfxState), vid[:]...) }

// changedKey keeps volume.changed and volume.added across a clean restart:
// a revision's Duration counts from the first change to staging and its
// Added sums what staging stored, and a restart between the backup and
// the commit made them the time since the restart and what was stored
// since.
func changedKey(vid volID) []byte { return append([]byte(pfxChanged), vid[:]...) }

func revisionKey(vid volID, seq uint64) []byte {
	return be64(append([]byte(pfxRevision), vid[:]...), seq)
}

func revisionPrefix(vid volID) []byte { return append([]byte(pfxRevision), vid[:]...) }

func volumeKey(name string) []byte { return append([]byte(pfxVolume), name...) }

// splitVersion splits a full versioned key into its record key and seq.
func splitVersion(key []byte) (rk []byte, seq uint64) {
	n := len(pfxData) + 8
	rk = key[n : len(key)-8]
	return rk, ^binary.BigEndian.Uint64(key[len(key)-8:])
}
