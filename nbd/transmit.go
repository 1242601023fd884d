package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"

	"github.com/strata-backup/strata/layers"
)

// request is one transmission-phase command.
type request struct {
	flags   uint16
	typ     uint16
	handle  uint64
	off     uint64
	length  uint32
	payload []byte // WRITE data, from the buffer pool
	weight  int64  // bytes held from conn.mem
}

// transmit reads requests and hands them to Options.Workers worker
// goroutines, within Options.BufferBytes of payload. It returns nil on
// NBD_CMD_DISC and the read error otherwise; requests still running finish
// and reply on their own (c.running counts the workers).
func (c *conn) transmit(ctx context.Context) error {
	// Long-lived workers rather than a goroutine per request: their stacks
	// are grown once, not on every 4 KiB read.
	reqs := make(chan *request)
	defer close(reqs)
	for range c.s.opts.Workers {
		c.running.Add(1)
		go func() {
			defer c.running.Done()
			for r := range reqs {
				c.handle(ctx, r)
				c.finish(r)
			}
		}()
	}
	var h [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("client left without NBD_CMD_DISC: %w", err)
			}
			return fmt.Errorf("read request: %w", err)
		}
		if m := binary.BigEndian.Uint32(h[:4]); m != magicRequest {
			return violation("request magic %#x", m)
		}
		r := &request{
			flags:  binary.BigEndian.Uint16(h[4:6]),
			typ:    binary.BigEndian.Uint16(h[6:8]),
			handle: binary.BigEndian.Uint64(h[8:16]),
			off:    binary.BigEndian.Uint64(h[16:24]),
			length: binary.BigEndian.Uint32(h[24:28]),
		}
		switch r.typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			if int64(r.length) > int64(c.s.opts.MaxRequest) {
				// Too big to buffer: skip the payload, keep the connection.
				if _, err := io.CopyN(io.Discard, c.br, int64(r.length)); err != nil {
					return fmt.Errorf("skip oversized write payload: %w", err)
				}
				c.replyError(r, errInval, fmt.Sprintf("write of %d bytes exceeds the %d byte limit", r.length, c.s.opts.MaxRequest))
				continue
			}
			r.weight = int64(r.length)
		case cmdRead:
			if int64(r.length) <= int64(c.s.opts.MaxRequest) {
				r.weight = int64(r.length)
			}
		}
		if r.weight > 0 {
			if err := c.mem.Acquire(ctx, r.weight); err != nil {
				return err
			}
		}
		if r.typ == cmdWrite {
			r.payload = c.s.bufs.get(int(r.length))
			if _, err := io.ReadFull(c.br, r.payload); err != nil {
				c.finish(r)
				return fmt.Errorf("read write payload (%d bytes at %d): %w", r.length, r.off, err)
			}
		}
		select {
		case reqs <- r:
		case <-ctx.Done():
			c.finish(r)
			return ctx.Err()
		}
	}
}

// finish returns what r holds.
func (c *conn) finish(r *request) {
	if r.payload != nil {
		c.s.bufs.put(r.payload)
		r.payload = nil
	}
	if r.weight > 0 {
		c.mem.Release(r.weight)
		r.weight = 0
	}
}

// allowedFlags are the command flags each command accepts on this
// connection; anything else gets EINVAL, as the spec recommends.
func (c *conn) allowedFlags(typ uint16) uint16 {
	switch typ {
	case cmdRead:
		if c.flags&tflagSendDF != 0 {
			return cmdFlagFUA | cmdFlagDF
		}
		return cmdFlagFUA
	case cmdWriteZeroes:
		return cmdFlagFUA | cmdFlagNoHole
	case cmdBlockStatus:
		return cmdFlagFUA | cmdFlagReqOne
	default:
		return cmdFlagFUA
	}
}

func inBounds(off uint64, length uint32, size int64) bool {
	return size >= 0 && off <= uint64(size) && uint64(length) <= uint64(size)-off
}

var cmdNames = map[uint16]string{
	cmdRead: "read", cmdWrite: "write", cmdFlush: "flush", cmdTrim: "trim",
	cmdWriteZeroes: "write-zeroes", cmdBlockStatus: "block-status",
}

// handle runs one request and sends its reply.
func (c *conn) handle(ctx context.Context, r *request) {
	e := c.exp.exp
	if r.flags&^c.allowedFlags(r.typ) != 0 {
		c.replyError(r, errInval, fmt.Sprintf("command flags %#x not valid here", r.flags))
		return
	}
	size := e.Size()
	writes := r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes
	switch {
	case cmdNames[r.typ] == "":
		c.replyError(r, errInval, fmt.Sprintf("unknown command %d", r.typ))
		return
	case writes && c.flags&tflagReadOnly != 0:
		c.replyError(r, errPerm, "export is read-only")
		return
	case r.typ == cmdFlush:
	case !inBounds(r.off, r.length, size):
		// The spec asks for ENOSPC on writes past the end, EINVAL otherwise.
		code := errInval
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			code = errNoSpc
		}
		c.replyError(r, code, fmt.Sprintf("%d bytes at %d beyond the end of the %d byte export", r.length, r.off, size))
		return
	}
	off := int64(r.off)

	var err error
	switch r.typ {
	case cmdRead:
		c.read(ctx, r, e, off)
		return
	case cmdBlockStatus:
		c.blockStatus(ctx, r, e, off)
		return
	case cmdFlush:
		err = flush(ctx, e)
	case cmdWrite:
		var n int
		n, err = e.WriteAt(ctx, r.payload, off)
		if err == nil && n != len(r.payload) {
			err = io.ErrShortWrite
		}
	case cmdTrim:
		// TRIM is advisory: without a Zeroer it does nothing.
		if z, ok := e.(Zeroer); ok && r.length > 0 {
			err = z.Zero(ctx, off, int64(r.length))
		}
	case cmdWriteZeroes:
		z, ok := e.(Zeroer)
		switch {
		case r.length == 0:
		case ok && r.flags&cmdFlagNoHole == 0:
			err = z.Zero(ctx, off, int64(r.length))
		default:
			err = c.writeZeros(ctx, e, off, int64(r.length))
		}
	}
	if err == nil && r.flags&cmdFlagFUA != 0 && writes {
		err = flush(ctx, e)
	}
	if err != nil {
		c.replyExportError(r, err)
		return
	}
	c.replyOK(r)
}

func flush(ctx context.Context, e Export) error {
	if f, ok := e.(Flusher); ok {
		return f.Flush(ctx)
	}
	return nil
}

// writeZeros writes real zeros, for NBD_CMD_FLAG_NO_HOLE or an Export that
// cannot punch holes.
func (c *conn) writeZeros(ctx context.Context, e Export, off, length int64) error {
	buf := c.s.bufs.get(int(min(length, 1<<20)))
	defer c.s.bufs.put(buf)
	clear(buf)
	for length > 0 {
		n := min(length, int64(len(buf)))
		if _, err := e.WriteAt(ctx, buf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// read answers NBD_CMD_READ. The whole range is read before anything is
// sent, so an error becomes a clean error reply instead of a dropped
// connection.
func (c *conn) read(ctx context.Context, r *request, e Export, off int64) {
	if int64(r.length) > int64(c.s.opts.MaxRequest) {
		c.replyError(r, errInval, fmt.Sprintf("read of %d bytes exceeds the %d byte limit", r.length, c.s.opts.MaxRequest))
		return
	}
	buf := c.s.bufs.get(int(r.length))
	defer c.s.bufs.put(buf)
	if len(buf) > 0 {
		n, err := e.ReadAt(ctx, buf, off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
			c.replyExportError(r, err)
			return
		}
		if n != len(buf) {
			c.replyExportError(r, fmt.Errorf("short read: %d of %d bytes: %w", n, len(buf), io.ErrUnexpectedEOF))
			return
		}
	}
	if !c.structured {
		c.send(simpleHeader(r.handle, 0), buf)
		return
	}
	if len(buf) == 0 {
		c.send(chunkHeader(r.handle, replyFlagDone, replyNone, 0))
		return
	}
	if r.flags&cmdFlagDF != 0 {
		c.send(dataChunk(r.handle, replyFlagDone, r.off, len(buf)), buf)
		return
	}
	c.send(readChunks(r.handle, r.off, buf)...)
}

// holeGranule is the unit in which read replies look for zeros to send as
// OFFSET_HOLE chunks instead of data, aligned to the export offset.
const holeGranule = 64 << 10

// readChunks splits a read reply into data and hole chunks.
func readChunks(handle, off uint64, buf []byte) [][]byte {
	type run struct {
		start, end int
		hole       bool
	}
	var runs []run
	for pos := 0; pos < len(buf); {
		end := min(len(buf), int((off+uint64(pos))/holeGranule+1)*holeGranule-int(off))
		hole := isZero(buf[pos:end])
		if n := len(runs); n > 0 && runs[n-1].hole == hole {
			runs[n-1].end = end
		} else {
			runs = append(runs, run{pos, end, hole})
		}
		pos = end
	}
	parts := make([][]byte, 0, 2*len(runs))
	for i, rn := range runs {
		flags := uint16(0)
		if i == len(runs)-1 {
			flags = replyFlagDone
		}
		o := off + uint64(rn.start)
		if rn.hole {
			parts = append(parts, holeChunk(handle, flags, o, uint32(rn.end-rn.start)))
		} else {
			parts = append(parts, dataChunk(handle, flags, o, rn.end-rn.start), buf[rn.start:rn.end])
		}
	}
	return parts
}

// maxDescriptors caps one BLOCK_STATUS reply; the spec lets the server
// describe less than was asked for.
const maxDescriptors = 1 << 16

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation.
func (c *conn) blockStatus(ctx context.Context, r *request, e Export, off int64) {
	if !c.structured || !c.metaAlloc {
		c.replyError(r, errInval, "no meta context selected")
		return
	}
	if r.length == 0 {
		c.replyError(r, errInval, "empty block status request")
		return
	}
	length := int64(r.length)
	var exts []layers.Extent
	if x, ok := e.(Extenter); ok {
		var err error
		exts, err = x.Extents(ctx, off, length)
		if err != nil {
			c.replyExportError(r, err)
			return
		}
	}
	descs := descriptors(exts, off, length)
	if r.flags&cmdFlagReqOne != 0 {
		descs = descs[:2]
	}
	payload := binary.BigEndian.AppendUint32(make([]byte, 0, 4+4*len(descs)), metaBaseAllocationID)
	for _, d := range descs {
		payload = binary.BigEndian.AppendUint32(payload, d)
	}
	c.send(chunkHeader(r.handle, replyFlagDone, replyBlockStatus, uint32(len(payload))), payload)
}

// descriptors turns extents into base:allocation descriptors (length,
// flags pairs) from off on, merging neighbours with equal flags. Ranges
// the extents do not cover count as data. At least one descriptor results.
func descriptors(exts []layers.Extent, off, length int64) []uint32 {
	exts = slices.Clone(exts)
	slices.SortFunc(exts, func(a, b layers.Extent) int { return int(min(max(a.Off-b.Off, -1), 1)) })
	end := off + length
	var out []uint32
	add := func(n int64, hole bool) {
		flags := uint32(0)
		if hole {
			flags = stateHole | stateZero
		}
		if k := len(out); k > 0 && out[k-1] == flags {
			out[k-2] += uint32(n)
			return
		}
		out = append(out, uint32(n), flags)
	}
	pos := off
	for _, x := range exts {
		if pos >= end || len(out) >= 2*maxDescriptors {
			break
		}
		xs, xe := max(x.Off, pos), min(x.Off+x.Len, end)
		if xe <= xs {
			continue
		}
		if xs > pos {
			add(xs-pos, false)
		}
		add(xe-xs, x.Hole)
		pos = xe
	}
	if pos < end && len(out) < 2*maxDescriptors {
		add(end-pos, false)
	}
	return out
}

// replyOK sends a successful reply without payload.
func (c *conn) replyOK(r *request) {
	c.send(simpleHeader(r.handle, 0))
}

// replyExportError maps an Export error to an NBD error reply, logging
// unexpected ones.
func (c *conn) replyExportError(r *request, err error) {
	code, expected := errno(err)
	if !expected {
		c.s.logIOError("nbd request failed", "export", c.exp.name, "cmd", cmdNames[r.typ],
			"offset", r.off, "length", r.length, "err", err)
	}
	c.replyError(r, code, err.Error())
}

// replyError sends an error reply: a structured error chunk with a message
// when structured replies are on (mandatory for READ), a simple one
// otherwise.
func (c *conn) replyError(r *request, code uint32, msg string) {
	if !c.structured {
		c.send(simpleHeader(r.handle, code))
		return
	}
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	b := chunkHeader(r.handle, replyFlagDone, replyError, uint32(6+len(msg)))
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	c.send(append(b, msg...))
}

// Reply coalescing: parts up to copyLimit bytes are copied into conn.wbuf,
// larger ones are written from the caller's memory (with writev).
const (
	copyLimit = 16 << 10
	wbufLimit = 256 << 10
)

// send writes one reply under the write lock. Replies finished while
// another is being written queue on the lock; the small ones among them
// stay in conn.wbuf and the last of the queue writes them all in one
// syscall, so a busy connection does not pay a syscall per 4 KiB reply. A
// failed write closes the socket so the reader stops too; replies after
// that are dropped.
func (c *conn) send(parts ...[]byte) {
	c.sending.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	last := c.sending.Add(-1) == 0
	if c.werr != nil {
		return
	}
	var out net.Buffers
	start := 0 // wbuf[start:] is not in out yet
	for _, p := range parts {
		if len(p) <= copyLimit {
			c.wbuf = append(c.wbuf, p...)
			continue
		}
		// Slices of an old wbuf array stay valid if append reallocates.
		if start < len(c.wbuf) {
			out = append(out, c.wbuf[start:])
			start = len(c.wbuf)
		}
		out = append(out, p)
	}
	if !last && len(out) == 0 && len(c.wbuf) < wbufLimit {
		return // the next reply in the queue writes this one too
	}
	if start < len(c.wbuf) {
		out = append(out, c.wbuf[start:])
	}
	_, err := out.WriteTo(c.nc)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.werr = err
		c.nc.Close()
	}
}

func simpleHeader(handle uint64, code uint32) []byte {
	b := make([]byte, 0, simpleReplyLen)
	b = binary.BigEndian.AppendUint32(b, magicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, code)
	return binary.BigEndian.AppendUint64(b, handle)
}

func chunkHeader(handle uint64, flags, typ uint16, length uint32) []byte {
	b := make([]byte, 0, structuredHeaderLen+16)
	b = binary.BigEndian.AppendUint32(b, magicStructuredReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, length)
}

// dataChunk is the header of an OFFSET_DATA chunk; n data bytes follow.
func dataChunk(handle uint64, flags uint16, off uint64, n int) []byte {
	b := chunkHeader(handle, flags, replyOffsetData, uint32(8+n))
	return binary.BigEndian.AppendUint64(b, off)
}

func holeChunk(handle uint64, flags uint16, off uint64, n uint32) []byte {
	b := chunkHeader(handle, flags, replyOffsetHole, 12)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, n)
}
