// Package key keeps a repository's master key, wrapped as OpenPGP messages
// (ProtonMail go-crypto), in the REPO/keys directory.
//
// # Entries
//
// Every entry is two files named by a random 16-hex-digit id:
//
//	<id>.asc   armored OpenPGP message holding the master key
//	<id>.json  plaintext metadata: kind, label, creation time, recipient
//	           fingerprints and a key check value; never a secret
//
// A "passphrase" entry is encrypted with a passphrase (Argon2id S2K, AEAD
// encrypted data, RFC 9580). A "recipients" entry is encrypted to one or
// more OpenPGP public keys, for escrow and offline recovery keys; it uses
// whatever the recipients' keys announce, so `gpg --decrypt` opens it with
// a v4 key. The .json file is written last and removed first: it is the
// commit point, and an .asc file without one is ignored.
//
// The message body is a short text (see body.go), so a user who decrypts an
// entry or an escrow file by hand sees what it is.
//
// # Key check value
//
// Each entry records a 64-bit check value derived from the master key
// (HKDF, not reversible). Adding an entry for a different master key than
// the ring already holds fails with ErrMasterMismatch, and Unlock rejects a
// decrypted key that does not match its entry's check value.
//
// # One way in per credential
//
// AddPassphrase refuses a passphrase that already opens an entry and
// AddRecipients a public key that already is a recipient
// (*DuplicateError), and ChangePassphrase rewraps every entry the current
// passphrase opens: otherwise an old passphrase could keep working through
// a forgotten second entry. Opening lists every entry credentials open, so
// a caller can tell whether removing one locks the user out. Resolve finds
// an entry by unique id prefix.
//
// # Escrow
//
// ExportEscrow writes a standalone armored message for stock GnuPG 2.2,
// which knows neither Argon2 nor AEAD packets: it uses iterated and salted
// S2K with SHA-256 and SEIPD v1 (MDC). It holds the repository id besides
// the key. LoadEscrow reads it back; adding its key as a new entry (with
// the same checks as any add) is how access is restored.
//
// # Errors
//
// Unlock returns ErrWrongPassphrase when no passphrase entry opens,
// *IdentityLockedError (which also matches ErrWrongPassphrase) when the
// identity's own passphrase is missing or wrong, ErrNoMatchingKey when no
// recipients entry is encrypted to the identity, ErrNoCredentials when none
// were given, ErrNoKeys when there is no entry. Remove refuses the last
// entry with ErrLastKey and unknown ids with ErrNotFound; Resolve returns
// ErrNotFound or *AmbiguousError. Adds return ErrMasterMismatch for another
// master key and *DuplicateError (ErrDuplicate) as above. Sentinels are
// matched with errors.Is, types with errors.As.
//
// # Concurrency
//
// A Ring serializes its own methods. Two processes changing one keys
// directory at once are kept apart by the repository lock, not here; every
// file is replaced atomically (write, fsync, rename), so a reader never
// sees half an entry.
package key
