// Package format owns the plaintext repository configuration (config.json):
// its fields, its version and how it is loaded and saved.
//
// config.json holds no secrets: the format version, the repository id, the
// erasure layout (K data + M parity shards), the shard directories, the
// segment size and the chunker parameters. Load refuses a directory without
// a config (ErrNotRepository) and a config written by a newer format
// (*VersionError), so an old binary never misreads a new repository.
//
// Save writes a temporary file, fsyncs it and renames it over config.json, so
// a crash leaves either the old or the new config, never a torn one.
package format
