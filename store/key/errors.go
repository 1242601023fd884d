package key

import "errors"

var (
	// ErrWrongPassphrase: no passphrase entry opened with the passphrase
	// given, or an identity's own passphrase was wrong or missing.
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
)
