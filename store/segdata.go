package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// segData holds a segment's bytes while it fills and until its shard files
// hold them. They go to an unlinked scratch file, so a filling segment
// lives in the kernel's page cache, which it can drop once the file is
// closed (seconds later, long before writeback) and never counts against
// the server, rather than in a heap buffer that the collector's headroom
// then doubles: restic and borg spool their pack files the same way. If
// no scratch file can be made or written (a full disk) the segment keeps
// its bytes in memory instead, so appending never fails.
//
// The bytes below len never change. Callers serialise append with every
// other method (Store.mu, or one goroutine owning the segment).
type segData struct {
	f   *os.File // the scratch file; nil when the bytes are in mem
	mem []byte
	len int64
	err error // the bytes are lost: moving them to memory failed
}

// spoolPrefix names scratch files where the filesystem cannot make
// unnamed ones (no O_TMPFILE); they are unlinked right after creation, and
// Open removes any a crash left in between.
const spoolPrefix = ".spool-"

// newSegData returns an empty segment with its scratch file in dir, or in
// memory if dir is "" or the file cannot be made.
func newSegData(dir string) *segData {
	if dir == "" {
		return &segData{}
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return &segData{f: os.NewFile(uintptr(fd), filepath.Join(dir, "(spool)"))}
	}
	f, err := os.CreateTemp(dir, spoolPrefix+"*")
	if err != nil {
		return &segData{}
	}
	os.Remove(f.Name())
	return &segData{f: f}
}

// memData returns a segment held in memory from the start, for bytes that
// are at hand already (a replayed journal, shards read back).
func memData(b []byte) *segData { return &segData{mem: b, len: int64(len(b))} }

// append adds p at the end.
func (d *segData) append(p []byte) {
	if d.f != nil {
		n, err := d.f.WriteAt(p, d.len)
		if err == nil {
			d.len += int64(n)
			return
		}
		d.toMemory()
	}
	d.mem = append(d.mem, p...)
	d.len += int64(len(p))
}

// toMemory moves the bytes written so far into memory and drops the file.
func (d *segData) toMemory() {
	buf := make([]byte, d.len, max(d.len, 1<<20))
	if _, err := d.f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		// The page cache gave back what it held a moment ago in every
		// test; if it ever does not, the segment fails to seal and says
		// why, rather than sealing zeros.
		d.err = fmt.Errorf("segment scratch file unreadable: %w", err)
	}
	d.f.Close()
	d.f, d.mem = nil, buf
}

// readAt fills p from the bytes at off, zeros past the end (the padding a
// segment's last data shard is coded with).
func (d *segData) readAt(p []byte, off int64) error {
	if d.err != nil {
		return d.err
	}
	n := 0
	if off < d.len {
		want := min(int64(len(p)), d.len-off)
		if d.f != nil {
			m, err := d.f.ReadAt(p[:want], off)
			if err != nil && !(errors.Is(err, io.EOF) && int64(m) == want) {
				return fmt.Errorf("read segment scratch file at %d: %w", off, err)
			}
			n = m
		} else {
			n = copy(p[:want], d.mem[off:])
		}
	}
	clear(p[n:])
	return nil
}

// close frees the bytes; the segment must not be used afterwards.
func (d *segData) close() {
	if d.f != nil {
		d.f.Close()
	}
	d.f, d.mem, d.len = nil, nil, 0
}

// removeSpools deletes scratch files a crash left between their creation
// and unlinking.
func removeSpools(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read journal dir: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), spoolPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove stale scratch file: %w", err)
			}
		}
	}
	return nil
}
