// Package nbd serves block devices over the Network Block Device protocol
// to nbd-client, qemu, nbdcopy, nbdinfo and qemu-img.
//
// # Concepts
//
// An Export is a fixed-size device (Size, ReadOnly, ReadAt, WriteAt);
// optional features are one-method interfaces the server type-asserts:
// Flusher (NBD_CMD_FLUSH and FUA), Zeroer (TRIM and WRITE_ZEROES punch
// holes), Extenter (NBD_CMD_BLOCK_STATUS with base:allocation), BlockSizer
// (preferred request size) and io.Closer. A Resolver turns the export name a
// client asks for into an Export and lists names for NBD_OPT_LIST.
// *layers.Disk implements all of them.
//
// The protocol is the fixed newstyle handshake of the NBD spec (doc/proto.md
// in the NetworkBlockDevice/nbd repository): NBD_OPT_GO/INFO with export
// and block size info, LIST, EXPORT_NAME, ABORT, STRUCTURED_REPLY,
// LIST/SET_META_CONTEXT for base:allocation; anything else gets
// NBD_REP_ERR_UNSUP. go-nbd's protocol package provides some constants;
// its server is not used (it is serial, lacks most commands and drops
// connections on errors).
//
// # Invariants
//
//   - An error in one request is an error reply to that request, never a
//     dropped connection: every READ is fully read before its reply starts.
//     Only protocol violations (bad magic, unknown client flags, a short
//     payload) end a connection, and only that one.
//   - Read-only exports are advertised READ_ONLY and CAN_MULTI_CONN; writes,
//     trims and zeroing get EPERM without reaching the Export.
//   - FLUSH and FUA replies are sent only after the Export's Flush returned.
//   - Bounds are checked before the Export is called: reads, trims and
//     block status past the end get EINVAL, writes ENOSPC (as the spec
//     asks); READ and WRITE over Options.MaxRequest (32 MiB) get EINVAL.
//     Unknown commands and flags get EINVAL.
//
// # Concurrency
//
// Each connection has a reader goroutine that parses requests (and reads
// WRITE payloads) and hands them to Options.Workers worker goroutines,
// within Options.BufferBytes of payload memory;
// replies go out under a write lock, whole, in completion order, and small
// replies that queue up behind each other leave in one write. So an Export
// sees concurrent calls from one connection and from several. All
// connections naming the same export share one opened Export (opened on
// first use, closed after the last connection ends, or at Close with
// Options.KeepOpen), which is what makes FLUSH on one connection cover the
// writes of all of them.
//
// # Errors
//
// Export errors map to NBD errors: layers.ErrReadOnly → EPERM,
// layers.ErrInvalid → EINVAL, layers.ErrNoSpace (and ENOSPC, EDQUOT, EFBIG)
// → ENOSPC, anything else → EIO, logged at most a few times a minute.
// Per-connection failures are logged and end that connection only.
package nbd
