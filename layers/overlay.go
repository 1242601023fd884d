package layers

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// overlay is a throwaway copy-on-write layer over a disk: written blocks
// live in a sparse spool file (deleted when created, so nothing is left
// behind), the rest is read from the base, which never changes.
type overlay struct {
	f       *os.File
	written map[int64]bool // block index -> holds data (false: zeroed)
	bs      int64
}

// Overlay returns a throwaway writable view over d: writes go to a private
// copy-on-write layer in the spool, dropped by Close; d never changes.
func (d *Disk) Overlay(ctx context.Context) (*Disk, error) {
	f, err := os.CreateTemp(d.v.r.opts.SpoolDir, "overlay-"+d.v.rec.ID+"-*")
	if err != nil {
		return nil, spoolErr("create overlay", err)
	}
	_ = os.Remove(f.Name()) // anonymous from here on; freed on close
	if err := f.Truncate(d.size); err != nil {
		_ = f.Close()
		return nil, spoolErr("size overlay", err)
	}
	o := &Disk{disk{v: d.v, seq: d.seq, size: d.size, bs: d.bs, base: d,
		ov: &overlay{f: f, written: map[int64]bool{}, bs: d.bs}}}
	return o, nil
}

// hole reports whether block idx is a hole in the overlay; known is false
// when the overlay does not hold it.
func (o *overlay) hole(idx int64) (hole, known bool) {
	data, ok := o.written[idx]
	return ok && !data, ok
}

func (o *overlay) read(ctx context.Context, base *Disk, idx, in int64, p []byte) error {
	data, ok := o.written[idx]
	switch {
	case !ok:
		base.mu.RLock()
		defer base.mu.RUnlock()
		return base.readLocked(ctx, p, idx*o.bs+in)
	case !data:
		clear(p)
		return nil
	}
	if _, err := o.f.ReadAt(p, idx*o.bs+in); err != nil {
		return fmt.Errorf("read overlay: %w", err)
	}
	return nil
}

// own copies block idx from the base into the overlay if needed.
func (o *overlay) own(ctx context.Context, base *Disk, idx int64) error {
	if _, ok := o.written[idx]; ok {
		if !o.written[idx] {
			o.written[idx] = true // zeroed: the file range is a hole already
		}
		return nil
	}
	blk := make([]byte, o.bs)
	base.mu.RLock()
	err := base.readLocked(ctx, blk, idx*o.bs)
	base.mu.RUnlock()
	if err != nil {
		return err
	}
	if _, err := o.f.WriteAt(blk, idx*o.bs); err != nil {
		return spoolErr("write overlay", err)
	}
	o.written[idx] = true
	return nil
}

func (o *overlay) write(ctx context.Context, base *Disk, p []byte, off int64) error {
	for len(p) > 0 {
		idx, in := off/o.bs, off%o.bs
		n := min(int64(len(p)), o.bs-in)
		if n < o.bs {
			if err := o.own(ctx, base, idx); err != nil {
				return err
			}
		}
		if _, err := o.f.WriteAt(p[:n], off); err != nil {
			return spoolErr("write overlay", err)
		}
		o.written[idx] = true
		p, off = p[n:], off+n
	}
	return nil
}

func (o *overlay) zero(ctx context.Context, base *Disk, off, length int64) error {
	end := off + length
	for off < end {
		idx, in := off/o.bs, off%o.bs
		n := min(end-off, o.bs-in)
		if n == o.bs {
			if err := unix.Fallocate(int(o.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
				return fmt.Errorf("zero overlay: %w", err)
			}
			o.written[idx] = false
		} else {
			if err := o.own(ctx, base, idx); err != nil {
				return err
			}
			if _, err := o.f.WriteAt(make([]byte, n), off); err != nil {
				return spoolErr("zero overlay", err)
			}
		}
		off += n
	}
	return nil
}

func (o *overlay) close() error {
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	o.written = nil
	return err
}
