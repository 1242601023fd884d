// Package chunk names pieces of data in the store: their identity (a keyed
// hash of the plaintext) and their kind. It is the vocabulary every other
// package shares with store, and has no dependencies of its own.
package chunk

import (
	"encoding/hex"
	"fmt"
)

// ID identifies a chunk: the keyed hash of its plaintext under the
// repository's id key, so equal data has equal ids (dedup) while ids reveal
// nothing about the data to someone without the key.
type ID [32]byte

// String returns the id as lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, for logs and messages.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is the zero value (no chunk).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the 64-digit hex form produced by String.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("parse chunk id %q: want 64 hex digits", s)
	}
	copy(id[:], b)
	return id, nil
}

// Kind says what a chunk holds. Data chunks are file or block contents;
// meta chunks are layer records that let `repair --rebuild-index` rebuild
// volumes and revisions from the shards alone.
type Kind uint8

const (
	KindData Kind = 1
	KindMeta Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindData:
		return "data"
	case KindMeta:
		return "meta"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// IsZero reports whether every byte of b is zero. All-zero chunks and blocks
// are holes and are never stored.
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
