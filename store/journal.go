package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/index"
)

// The journal makes the open segment durable without sealing it: Flush
// appends the chunks added since the last Flush (sealed bytes, so nothing
// readable) and reference counts that changed, then fsyncs. A journal file
// is removed once its segment's shards and index entries are durable; on
// Open, leftover journals are replayed and sealed.
//
// File: magic (8) + segment id (8), then records:
//
//	type (1) | chunk id (32) | kind (1) | refs (4) | payload length (4) | CRC-32C (4) | payload
//
// The CRC covers the first 42 header bytes and the payload, so a torn
// tail (a crash mid-Flush) ends the replay cleanly.
const (
	recChunk     = 1
	recRefs      = 2
	recHeaderLen = 46
)

var (
	journalMagic = []byte("STRJRNL1")
	crcTable     = crc32.MakeTable(crc32.Castagnoli)
)

func (s *Store) journalPath(seg uint64) string {
	return filepath.Join(s.journalDir(), fmt.Sprintf("%016x", seg))
}

func recHeader(typ byte, id chunk.ID, kind chunk.Kind, refs int64, payload []byte) []byte {
	h := make([]byte, recHeaderLen)
	h[0] = typ
	copy(h[1:], id[:])
	h[33] = byte(kind)
	binary.LittleEndian.PutUint32(h[34:], uint32(refs))
	binary.LittleEndian.PutUint32(h[38:], uint32(len(payload)))
	c := crc32.Update(crc32.Checksum(h[:42], crcTable), crcTable, payload)
	binary.LittleEndian.PutUint32(h[42:], c)
	return h
}

// errHandedOff means the segment to journal is no longer the open one.
var errHandedOff = errors.New("segment handed off for sealing")

// journalOpen appends what changed in seg, the open segment, to its
// journal and fsyncs it; errHandedOff if seg is not open any more.
func (s *Store) journalOpen(seg *segBuf) error {
	s.mu.Lock()
	if seg != s.open {
		s.mu.Unlock()
		return errHandedOff
	}
	type rec struct {
		m    *memChunk
		refs int64
		hdr  []byte
		body []byte
	}
	// The chunks not journaled yet were appended back to back: one read
	// of their range, under the lock like every read of an open
	// segment, rather than one per chunk.
	var fresh []byte
	var freshOff int64
	if seg.jChunks < len(seg.chunks) {
		freshOff = int64(seg.chunks[seg.jChunks].off)
		fresh = make([]byte, seg.data.len-freshOff)
		if err := seg.data.readAt(fresh, freshOff); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("journal segment %016x: %w", seg.id, err)
		}
	}
	var recs []rec
	for i, c := range seg.chunks {
		m := s.mem[c.id]
		if m == nil || m.seg != seg {
			continue
		}
		switch {
		case i >= seg.jChunks:
			lo := int64(c.off) - freshOff
			body := fresh[lo : lo+int64(c.n)]
			recs = append(recs, rec{m, m.refs, recHeader(recChunk, c.id, c.kind, m.refs, body), body})
		case m.refs != m.jRefs:
			recs = append(recs, rec{m, m.refs, recHeader(recRefs, c.id, c.kind, m.refs, nil), nil})
		}
	}
	nChunks := len(seg.chunks)
	s.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}

	// Once the records are built, a hand-off does not matter: they hold
	// copies of the bytes, and the journal file stays until the segment
	// is sealed and synced (removeJournal takes jmu).
	seg.jmu.Lock()
	defer seg.jmu.Unlock()
	if seg.sealed {
		return nil // sealed meanwhile: durable in shards
	}
	if seg.dataGone {
		return errHandedOff // in the shard files already; the caller waits for the seal
	}
	if seg.jf == nil {
		f, err := os.OpenFile(s.journalPath(seg.id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("create journal: %w", err)
		}
		hdr := binary.BigEndian.AppendUint64(bytes.Clone(journalMagic), seg.id)
		if _, err := f.Write(hdr); err != nil {
			f.Close()
			os.Remove(f.Name())
			return fmt.Errorf("write journal: %w", err)
		}
		if err := syncDir(s.journalDir()); err != nil {
			f.Close()
			os.Remove(f.Name())
			return err
		}
		seg.jf, seg.jOff = f, int64(len(hdr))
	}
	// Drop a tail torn by an earlier failed write (for example ENOSPC).
	if err := seg.jf.Truncate(seg.jOff); err != nil {
		return fmt.Errorf("truncate journal: %w", err)
	}
	w := bufio.NewWriterSize(io.NewOffsetWriter(seg.jf, seg.jOff), 1<<20)
	var n int64
	for _, r := range recs {
		w.Write(r.hdr)
		w.Write(r.body)
		n += int64(len(r.hdr) + len(r.body))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write journal %s: %w", seg.jf.Name(), err)
	}
	if err := seg.jf.Sync(); err != nil {
		return fmt.Errorf("sync journal %s: %w", seg.jf.Name(), err)
	}
	seg.jOff += n
	s.mu.Lock()
	for _, r := range recs {
		r.m.jRefs = r.refs
	}
	if nChunks > seg.jChunks {
		seg.jChunks = nChunks
	}
	s.mu.Unlock()
	return nil
}

// removeJournal deletes a sealed segment's journal.
func (s *Store) removeJournal(seg *segBuf) {
	seg.jmu.Lock()
	defer seg.jmu.Unlock()
	seg.sealed = true
	if seg.jf != nil {
		seg.jf.Close()
		seg.jf = nil
	}
	if err := os.Remove(s.journalPath(seg.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove journal", "segment", fmt.Sprintf("%016x", seg.id), "err", err)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// replayJournals seals the segments that were open when the last process
// died. Records after a torn one were never acknowledged and are dropped.
func (s *Store) replayJournals(ctx context.Context) error {
	ents, err := os.ReadDir(s.journalDir())
	if err != nil {
		return fmt.Errorf("read journal dir: %w", err)
	}
	for _, e := range ents {
		segID, err := strconv.ParseUint(e.Name(), 16, 64)
		if err != nil || len(e.Name()) != 16 {
			continue
		}
		seg, err := s.readJournal(segID)
		if err != nil {
			return err
		}
		if seg != nil && len(seg.chunks) > 0 {
			s.log.Info("sealing segment from journal", "segment", e.Name(), "chunks", len(seg.chunks))
			if err := s.sealSegment(ctx, seg); err != nil {
				return fmt.Errorf("seal journaled segment %s: %w", e.Name(), classify(err))
			}
		}
		if err := os.Remove(filepath.Join(s.journalDir(), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove journal: %w", err)
		}
	}
	return nil
}

// readJournal parses one journal; nil if its segment is already sealed.
func (s *Store) readJournal(segID uint64) (*segBuf, error) {
	p := s.journalPath(segID)
	var sealed bool
	if err := s.db.View(func(txn *badger.Txn) error {
		_, found, err := index.GetSegment(txn, segID)
		sealed = found
		return err
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if segID >= s.nextSeg {
		s.nextSeg = segID + 1
	}
	s.mu.Unlock()
	if sealed {
		return nil, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	if len(b) < 16 || !bytes.Equal(b[:8], journalMagic) || binary.BigEndian.Uint64(b[8:]) != segID {
		s.log.Warn("journal without valid header, dropped", "file", p)
		return nil, nil
	}
	seg := &segBuf{id: segID}
	var buf []byte
	pos := make(map[chunk.ID]int)
	rest := b[16:]
	for len(rest) >= recHeaderLen {
		h := rest[:recHeaderLen]
		n := int(binary.LittleEndian.Uint32(h[38:]))
		if len(rest) < recHeaderLen+n {
			break
		}
		body := rest[recHeaderLen : recHeaderLen+n]
		if crc32.Update(crc32.Checksum(h[:42], crcTable), crcTable, body) != binary.LittleEndian.Uint32(h[42:]) {
			break
		}
		var id chunk.ID
		copy(id[:], h[1:33])
		refs := int64(binary.LittleEndian.Uint32(h[34:]))
		switch h[0] {
		case recChunk:
			if _, dup := pos[id]; dup {
				break
			}
			pos[id] = len(seg.chunks)
			seg.chunks = append(seg.chunks, segChunk{id: id, kind: chunk.Kind(h[33]), off: uint32(len(buf)), n: uint32(n), refs: refs})
			buf = append(buf, body...)
		case recRefs:
			if i, ok := pos[id]; ok {
				seg.chunks[i].refs = refs
			}
		}
		rest = rest[recHeaderLen+n:]
	}
	if len(rest) > 0 {
		s.log.Warn("journal has a torn tail (crash during flush), unacknowledged records dropped", "file", p, "bytes", len(rest))
	}
	seg.data = memData(buf)
	return seg, nil
}
