package key

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
)

// Master is a repository master key. Its String, GoString and LogValue
// methods redact it, so it does not leak through fmt or slog by accident.
type Master [32]byte

// NewMaster returns a new random master key.
func NewMaster() (Master, error) {
	var m Master
	_, err := rand.Read(m[:]) // never fails since Go 1.24; kept for the contract
	return m, err
}

// LogValue redacts the key in structured logs.
func (Master) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String redacts the key for %v, %s and %x.
func (Master) String() string { return "key.Master(REDACTED)" }

// GoString redacts the key for %#v.
func (Master) GoString() string { return "key.Master(REDACTED)" }

// check returns the key check value: 8 bytes of HKDF output under its own
// label, which identifies the master key without revealing anything usable.
func (m Master) check() string {
	b, err := hkdf.Key(sha256.New, m[:], nil, "strata/v1 key-check", 8)
	if err != nil { // only for lengths HKDF cannot produce
		panic("key: hkdf: " + err.Error())
	}
	return hex.EncodeToString(b)
}
