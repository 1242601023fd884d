package key

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrWrongPassphrase: no passphrase entry opened with the passphrase
	// given, or an identity's own passphrase was wrong or missing (then
	// the error is also an *IdentityLockedError).
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrNoMatchingKey: no recipients entry is encrypted to the identity.
	ErrNoMatchingKey = errors.New("no key entry matches the identity")
	// ErrNoCredentials: neither a passphrase nor an identity was given.
	ErrNoCredentials = errors.New("no passphrase or identity given")
	// ErrLastKey: removing the entry would leave the master key unreachable.
	ErrLastKey = errors.New("refusing to remove the last key entry")
	// ErrNotFound: no entry has the id.
	ErrNotFound = errors.New("key entry not found")
	// ErrNoKeys: the keys directory holds no entry at all.
	ErrNoKeys = errors.New("no key entries")
	// ErrBadKey: OpenPGP key material given by the user is unusable.
	ErrBadKey = errors.New("unusable OpenPGP key")
	// ErrCorrupt: an entry or escrow file is malformed or fails its
	// integrity check.
	ErrCorrupt = errors.New("corrupt key file")
	// ErrMasterMismatch: the master key does not match the ring's entries.
	ErrMasterMismatch = errors.New("master key does not match this repository's key entries")
	// ErrDuplicate: the passphrase or public key being added already opens
	// an entry (the error is a *DuplicateError naming it).
	ErrDuplicate = errors.New("already opens a key entry")
)

// IdentityLockedError means an identity's secret key is protected by a
// passphrase and none was given (Given false) or the one given does not
// unlock it. It matches ErrWrongPassphrase.
type IdentityLockedError struct {
	Fingerprint string
	Given       bool
	Err         error // from go-crypto; nil when no passphrase was given
}

func (e *IdentityLockedError) Error() string {
	if !e.Given {
		return fmt.Sprintf("identity %s is passphrase-protected and no passphrase for it was given", e.Fingerprint)
	}
	return fmt.Sprintf("the passphrase does not unlock identity %s: %v", e.Fingerprint, e.Err)
}

func (e *IdentityLockedError) Unwrap() error { return ErrWrongPassphrase }

// DuplicateError means a passphrase or public key being added already
// opens the entries IDs; adding it again would only make a second entry
// that has to be changed or removed along with the first. It matches
// ErrDuplicate.
type DuplicateError struct {
	IDs          []string
	Fingerprints []string // the public keys already present; nil for a passphrase
}

func (e *DuplicateError) Error() string {
	if len(e.Fingerprints) > 0 {
		return fmt.Sprintf("public key %s is already a recipient of key entry %s", strings.Join(e.Fingerprints, ","), strings.Join(e.IDs, ","))
	}
	return fmt.Sprintf("the passphrase already opens key entry %s", strings.Join(e.IDs, ","))
}

func (e *DuplicateError) Unwrap() error { return ErrDuplicate }

// AmbiguousError means an id prefix matches more than one entry.
type AmbiguousError struct {
	Prefix  string
	Matches []string // ids of the matching entries
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("key entry id prefix %q is ambiguous: it matches %s", e.Prefix, strings.Join(e.Matches, ", "))
}
