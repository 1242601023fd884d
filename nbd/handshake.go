package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// conn is one client connection: option haggling, then transmission.
type conn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	// Negotiated in the handshake, read-only in transmission.
	structured bool   // NBD_OPT_STRUCTURED_REPLY acknowledged
	metaExport string // export the meta contexts were selected for
	metaAlloc  bool   // base:allocation selected
	exp        *openExport
	flags      uint16 // transmission flags sent to the client

	wmu     sync.Mutex          // serialises replies; guards wbuf and werr
	wbuf    []byte              // small reply bytes not yet written to nc
	werr    error               // first reply write error; later replies are dropped
	sending atomic.Int32        // replies ready to send, waiting for or holding wmu
	mem     *semaphore.Weighted // payload bytes in flight
	running sync.WaitGroup      // worker goroutines
}

// errAbort ends a connection whose client sent NBD_OPT_ABORT.
var errAbort = errors.New("client aborted negotiation")

// protocolError is a client violating the protocol; the connection is
// dropped, as the spec allows.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "protocol violation: " + e.msg }

func violation(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Dropping the socket is what unblocks the reader and any reply writer
	// when the server stops.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	defer nc.Close()

	c := &conn{
		s:   s,
		nc:  nc,
		br:  bufio.NewReaderSize(nc, 64<<10),
		log: s.log.With("remote", nc.RemoteAddr().String()),
		mem: semaphore.NewWeighted(s.opts.BufferBytes),
	}
	err := c.negotiate(ctx)
	if c.exp != nil {
		defer s.release(c.exp)
	}
	if err != nil {
		c.logEnd("nbd handshake", err)
		return
	}
	c.log = c.log.With("export", c.exp.name)
	c.log.Debug("nbd connection", "flags", fmt.Sprintf("%#x", c.flags), "structured", c.structured)
	err = c.transmit(ctx)
	c.running.Wait()
	c.logEnd("nbd connection", err)
}

// logEnd logs why a connection ended: quietly for clients that simply went
// away, as a warning for protocol violations and I/O trouble.
func (c *conn) logEnd(what string, err error) {
	switch {
	case err == nil || errors.Is(err, errAbort):
		c.log.Debug(what+" ended", "reason", err)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.s.closeCtx.Err() != nil:
		c.log.Debug(what+" ended", "err", err)
	default:
		c.log.Warn(what+" ended", "err", err)
	}
}

// negotiate runs the fixed newstyle handshake until the client picks an
// export or leaves. Once c.exp is set, the caller releases it, whatever
// negotiate returns.
func (c *conn) negotiate(ctx context.Context) error {
	if err := c.nc.SetDeadline(c.s.opts.Now().Add(c.s.opts.HandshakeTimeout)); err != nil {
		return err
	}
	hello := binary.BigEndian.AppendUint64(nil, magicInit)
	hello = binary.BigEndian.AppendUint64(hello, magicOption)
	hello = binary.BigEndian.AppendUint16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello); err != nil {
		return fmt.Errorf("send greeting: %w", err)
	}
	var b [optionHeaderLen]byte
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return fmt.Errorf("read client flags: %w", err)
	}
	cflags := binary.BigEndian.Uint32(b[:4])
	if cflags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return violation("unknown client flags %#x", cflags)
	}
	noZeroes := cflags&clientFlagNoZeroes != 0

	for {
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return fmt.Errorf("read option: %w", err)
		}
		if m := binary.BigEndian.Uint64(b[:8]); m != magicOption {
			return violation("option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(b[8:12])
		n := binary.BigEndian.Uint32(b[12:16])
		if n > maxOptionLen {
			return violation("option %d carries %d bytes", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return fmt.Errorf("read option %d: %w", opt, err)
		}

		var err error
		switch opt {
		case optExportName:
			return c.optExportName(ctx, string(data), noZeroes)
		case optAbort:
			// Best effort: the client may already be gone.
			_ = c.optReply(opt, repAck, nil)
			return errAbort
		case optList:
			err = c.optList(ctx, data)
		case optInfo, optGo:
			var done bool
			done, err = c.optInfoGo(ctx, opt, data)
			if err == nil && done {
				return c.nc.SetDeadline(time.Time{})
			}
		case optStructuredReply:
			if len(data) != 0 {
				err = c.optError(opt, repErrInvalid, "structured reply option carries no data")
				break
			}
			c.structured = true
			err = c.optReply(opt, repAck, nil)
		case optListMetaContext, optSetMetaContext:
			err = c.optMetaContext(opt, data)
		case optStartTLS:
			err = c.optError(opt, repErrUnsup, "TLS is not supported")
		default:
			err = c.optError(opt, repErrUnsup, fmt.Sprintf("option %d is not supported", opt))
		}
		if err != nil {
			return err
		}
	}
}

// optReply sends one option reply.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 0, 20+len(data))
	b = binary.BigEndian.AppendUint64(b, magicOptionReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("send reply to option %d: %w", opt, err)
	}
	return nil
}

// optError sends an error reply with a message for the user.
func (c *conn) optError(opt, typ uint32, msg string) error {
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	return c.optReply(opt, typ, []byte(msg))
}

// openError answers an option naming an export that cannot be opened.
func (c *conn) openError(opt uint32, name string, err error) error {
	if !errors.Is(err, ErrUnknownExport) {
		c.log.Warn("open nbd export", "export", name, "err", err)
	}
	if c.s.closeCtx.Err() != nil {
		return c.optError(opt, repErrShutdown, "server is shutting down")
	}
	return c.optError(opt, repErrUnknown, fmt.Sprintf("export %q: %v", name, err))
}

func (c *conn) optList(ctx context.Context, data []byte) error {
	if len(data) != 0 {
		return c.optError(optList, repErrInvalid, "list option carries no data")
	}
	names, err := c.s.resolver.List(ctx)
	if err != nil {
		c.log.Warn("list nbd exports", "err", err)
		return c.optError(optList, repErrPolicy, fmt.Sprintf("list exports: %v", err))
	}
	for _, name := range names {
		if len(name) > maxStringLen {
			continue
		}
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		if err := c.optReply(optList, repServer, append(d, name...)); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck, nil)
}

// transmissionFlags are the flags advertised for e on this connection.
func (c *conn) transmissionFlags(e Export) uint16 {
	f := tflagHasFlags | tflagSendFlush | tflagSendFUA
	if e.ReadOnly() {
		f |= tflagReadOnly | tflagCanMultiConn
	} else {
		f |= tflagSendTrim | tflagSendWriteZeroes
		if c.s.opts.WritableMultiConn {
			f |= tflagCanMultiConn
		}
	}
	if c.structured {
		f |= tflagSendDF
	}
	return f
}

// optExportName is the old way into transmission: no error reply exists,
// so an unknown export drops the connection.
func (c *conn) optExportName(ctx context.Context, name string, noZeroes bool) error {
	e, err := c.s.acquire(ctx, name)
	if err != nil {
		return fmt.Errorf("export %q: %w", name, err)
	}
	if c.metaExport != name {
		c.metaAlloc = false
	}
	c.exp, c.flags = e, c.transmissionFlags(e.exp)
	b := binary.BigEndian.AppendUint64(nil, uint64(e.exp.Size()))
	b = binary.BigEndian.AppendUint16(b, c.flags)
	if !noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("send export info: %w", err)
	}
	return c.nc.SetDeadline(time.Time{})
}

// optInfoGo answers NBD_OPT_INFO and NBD_OPT_GO; done reports that GO
// succeeded and transmission starts.
func (c *conn) optInfoGo(ctx context.Context, opt uint32, data []byte) (done bool, err error) {
	if len(data) < 6 {
		return false, c.optError(opt, repErrInvalid, "short info request")
	}
	nameLen := binary.BigEndian.Uint32(data[:4])
	if nameLen > maxStringLen || int(nameLen) > len(data)-6 {
		return false, c.optError(opt, repErrInvalid, "bad export name length")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest[:2]))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return false, c.optError(opt, repErrInvalid, "bad information request count")
	}
	wantName := false
	for i := range nreq {
		if binary.BigEndian.Uint16(rest[2*i:]) == infoName {
			wantName = true
		}
	}

	e, err := c.s.acquire(ctx, name)
	if err != nil {
		return false, c.openError(opt, name, err)
	}
	keep := false
	defer func() {
		if !keep {
			c.s.release(e)
		}
	}()

	flags := c.transmissionFlags(e.exp)
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(e.exp.Size()))
	info = binary.BigEndian.AppendUint16(info, flags)
	if err := c.optReply(opt, repInfo, info); err != nil {
		return false, err
	}
	// Sent whether asked for or not, as qemu-nbd does: clients that did
	// not ask ignore it, and it tells those that did our 32 MiB limit.
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, c.preferredBlockSize(e.exp))
	bs = binary.BigEndian.AppendUint32(bs, uint32(c.s.opts.MaxRequest))
	if err := c.optReply(opt, repInfo, bs); err != nil {
		return false, err
	}
	if wantName {
		nb := binary.BigEndian.AppendUint16(nil, infoName)
		if err := c.optReply(opt, repInfo, append(nb, name...)); err != nil {
			return false, err
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt != optGo {
		return false, nil
	}
	if c.metaExport != name {
		// Contexts were selected for another export (or none).
		c.metaAlloc = false
	}
	keep = true
	c.exp, c.flags = e, flags
	return true, nil
}

// preferredBlockSize is the export's block size rounded to a power of two
// between 4 KiB and the maximum request size.
func (c *conn) preferredBlockSize(e Export) uint32 {
	want := 4096
	if bs, ok := e.(BlockSizer); ok && bs.BlockSize() > want {
		want = bs.BlockSize()
	}
	p := 4096
	for p < want && p < c.s.opts.MaxRequest {
		p <<= 1
	}
	for p > c.s.opts.MaxRequest && p > 4096 {
		p >>= 1
	}
	return uint32(p)
}

// optMetaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT. The only context is base:allocation; it is
// offered for every export (exports without Extenter report all data).
func (c *conn) optMetaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.optError(opt, repErrInvalid, "negotiate structured replies first")
	}
	name, queries, ok := parseMetaRequest(data)
	if !ok {
		return c.optError(opt, repErrInvalid, "malformed meta context request")
	}
	match := false
	if opt == optListMetaContext && len(queries) == 0 {
		match = true
	}
	for _, q := range queries {
		switch {
		case q == metaBaseAllocation:
			match = true
		case q == "base:" && opt == optListMetaContext:
			// "base:" lists the base namespace but selects nothing.
			match = true
		}
	}
	id := uint32(0) // ids in a LIST reply are reserved
	if opt == optSetMetaContext {
		id = metaBaseAllocationID
		c.metaExport, c.metaAlloc = name, match
	}
	if match {
		b := binary.BigEndian.AppendUint32(nil, id)
		if err := c.optReply(opt, repMetaContext, append(b, metaBaseAllocation...)); err != nil {
			return err
		}
	}
	return c.optReply(opt, repAck, nil)
}

// parseMetaRequest splits a meta context option: export name, then a count
// of queries, each a length-prefixed string.
func parseMetaRequest(data []byte) (name string, queries []string, ok bool) {
	str := func() (string, bool) {
		if len(data) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(data)
		if n > maxStringLen || int(n) > len(data)-4 {
			return "", false
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, true
	}
	name, ok = str()
	if !ok || len(data) < 4 {
		return "", nil, false
	}
	count := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(count)*4 > uint64(len(data)) {
		return "", nil, false
	}
	for range count {
		q, ok := str()
		if !ok {
			return "", nil, false
		}
		queries = append(queries, q)
	}
	return name, queries, len(data) == 0
}
