// Package crypt turns a repository master key into the keys that protect
// chunks and the index, and seals and opens chunk payloads.
//
// # Keys
//
// NewKeys derives independent subkeys from the master key with HKDF-SHA256,
// one per purpose (distinct info strings): chunk ids, chunk encryption, the
// badger index and generic MACs. Knowing one subkey says nothing about the
// others or the master key.
//
// # Chunk ids
//
// ID is keyed BLAKE3 of the plaintext under the id subkey: equal data gets
// equal ids (dedup), but ids reveal nothing to someone without the key.
//
// # Sealed format (version 1)
//
//	byte 0      header: high nibble = format version (1), low nibble = codec
//	            (0 = stored, 1 = S2 block)
//	bytes 1..12 random AES-GCM nonce
//	rest        AES-256-GCM ciphertext of the (possibly compressed) payload,
//	            with its 16-byte tag
//
// The associated data is the header byte followed by the chunk id, so the
// header cannot be changed and a sealed chunk cannot be passed off under
// another id. Overhead is a constant 29 bytes (Overhead) plus nothing for
// incompressible data: compression is kept only when it saves at least
// 1/32 of the input.
//
// # Invariants and errors
//
// Open never returns data that was not sealed by Seal under the same keys
// and id: any flipped bit, truncation, wrong key or wrong id gives an error
// matching ErrAuth (errors.Is). There is no other error from Open.
//
// # Concurrency
//
// A *Keys is immutable after NewKeys; every method is safe for concurrent
// use. Seal and Open follow the append style of crypto/cipher: the result
// is appended to dst, which may be nil, and the input is never modified.
// The input must not overlap the spare capacity of dst.
package crypt
