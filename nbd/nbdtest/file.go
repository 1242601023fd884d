package nbdtest

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/nbd"
)

// File is a disk backed by a sparse file: Zero punches holes, Extents uses
// SEEK_DATA/SEEK_HOLE, Flush is fdatasync. It is what qemu-nbd serving a raw
// file does, for benchmarks that compare the two.
type File struct {
	f    *os.File
	size int64
	ro   bool
}

var (
	_ nbd.Export   = (*File)(nil)
	_ nbd.Flusher  = (*File)(nil)
	_ nbd.Zeroer   = (*File)(nil)
	_ nbd.Extenter = (*File)(nil)
)

// OpenFile opens path as a disk of its current size.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{f: f, size: fi.Size(), ro: readOnly}, nil
}

// Release closes the file. (File has no Close, so the server never closes
// it between connections.)
func (d *File) Release() error { return d.f.Close() }

func (d *File) Size() int64    { return d.size }
func (d *File) ReadOnly() bool { return d.ro }

func (d *File) check(off, n int64) error {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("%d bytes at %d on a %d byte disk: %w", n, off, d.size, layers.ErrInvalid)
	}
	return nil
}

func (d *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

func (d *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if d.ro {
		return 0, layers.ErrReadOnly
	}
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.f.WriteAt(p, off)
}

func (d *File) Zero(ctx context.Context, off, length int64) error {
	if d.ro {
		return layers.ErrReadOnly
	}
	if err := d.check(off, length); err != nil {
		return err
	}
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func (d *File) Flush(ctx context.Context) error { return unix.Fdatasync(int(d.f.Fd())) }

func (d *File) Extents(ctx context.Context, off, length int64) ([]layers.Extent, error) {
	if err := d.check(off, length); err != nil {
		return nil, err
	}
	fd := int(d.f.Fd())
	var out []layers.Extent
	end := off + length
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && data >= end) {
			out = append(out, layers.Extent{Off: pos, Len: end - pos, Hole: true})
			break
		}
		if err != nil {
			return nil, err
		}
		if data > pos {
			out = append(out, layers.Extent{Off: pos, Len: data - pos, Hole: true})
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		hole = min(hole, end)
		out = append(out, layers.Extent{Off: data, Len: hole - data})
		pos = hole
	}
	return out, nil
}
