package layers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/layers/internal/memstore"
	"github.com/strata-backup/strata/store/chunk"
)

func newDisk(t testing.TB, e *env, name string, size int64, bs int) *layers.Disk {
	t.Helper()
	ctx := context.Background()
	if _, err := e.repo.CreateVolume(ctx, name, layers.VolumeSpec{Type: layers.TypeBlock, Size: size, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	d, err := e.repo.StagingDisk(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readAll(t testing.TB, d *layers.Disk) []byte {
	t.Helper()
	buf := make([]byte, d.Size())
	if _, err := d.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestDiskRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	const size = 8 << 20
	d := newDisk(t, e, "vm", size, 0)
	if d.BlockSize() != layers.DefaultBlockSize || d.Size() != size || d.ReadOnly() {
		t.Fatalf("disk: bs %d size %d ro %v", d.BlockSize(), d.Size(), d.ReadOnly())
	}
	model := make([]byte, size)
	rng := rand.New(rand.NewSource(3))
	apply := func(steps int) {
		for i := 0; i < steps; i++ {
			off := rng.Int63n(size - 1)
			n := min(rng.Int63n(200<<10)+1, size-off)
			switch rng.Intn(4) {
			case 0:
				if err := d.Zero(ctx, off, n); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			case 1:
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			default:
				p := make([]byte, n)
				rng.Read(p)
				if _, err := d.WriteAt(ctx, p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
			if i%10 == 0 && !bytes.Equal(readAll(t, d), model) {
				t.Fatalf("step %d: disk differs from model", i)
			}
		}
	}
	apply(100)
	checkExtents(t, d, model)
	rev1, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want1 := append([]byte(nil), model...)
	apply(60)
	// Only Flush'ed (and committed) state must survive a reopen.
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.reopen(t)
	d, err = e.repo.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, d), model) {
		t.Fatal("staging after reopen differs")
	}
	r1, err := e.repo.RevisionDisk(ctx, "vm", rev1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !r1.ReadOnly() || !bytes.Equal(readAll(t, r1), want1) {
		t.Fatal("revision 1 changed")
	}
	checkExtents(t, r1, want1)
	if _, err := r1.WriteAt(ctx, []byte("x"), 0); !errors.Is(err, layers.ErrReadOnly) {
		t.Fatalf("write to revision: %v", err)
	}
	if err := r1.Zero(ctx, 0, 4096); !errors.Is(err, layers.ErrReadOnly) {
		t.Fatalf("zero on revision: %v", err)
	}
	for _, c := range []struct{ off, n int64 }{{size, 1}, {size - 1, 2}, {-1, 1}} {
		if _, err := d.WriteAt(ctx, make([]byte, c.n), c.off); !errors.Is(err, layers.ErrInvalid) {
			t.Errorf("write at %d+%d: %v", c.off, c.n, err)
		}
		if _, err := d.ReadAt(ctx, make([]byte, c.n), c.off); !errors.Is(err, layers.ErrInvalid) {
			t.Errorf("read at %d+%d: %v", c.off, c.n, err)
		}
	}
	// Overlay: writes visible through it only, dropped on close.
	ov, err := r1.Overlay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ovModel := append([]byte(nil), want1...)
	for i := 0; i < 50; i++ {
		off := rng.Int63n(size - 1)
		n := min(rng.Int63n(100<<10)+1, size-off)
		if i%5 == 0 {
			if err := ov.Zero(ctx, off, n); err != nil {
				t.Fatal(err)
			}
			clear(ovModel[off : off+n])
			continue
		}
		p := make([]byte, n)
		rng.Read(p)
		if _, err := ov.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		copy(ovModel[off:], p)
	}
	if !bytes.Equal(readAll(t, ov), ovModel) {
		t.Fatal("overlay differs from its model")
	}
	checkExtents(t, ov, ovModel)
	if !bytes.Equal(readAll(t, r1), want1) {
		t.Fatal("overlay changed the revision")
	}
	if err := ov.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r1), want1) {
		t.Fatal("revision changed after overlay close")
	}
}

// checkExtents checks that Extents covers the disk and that holes read
// as zeros.
func checkExtents(t *testing.T, d *layers.Disk, model []byte) {
	t.Helper()
	ext, err := d.Extents(context.Background(), 0, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	holes := 0
	for _, x := range ext {
		if x.Off != pos {
			t.Fatalf("extents not contiguous at %d: %+v", pos, x)
		}
		if x.Hole {
			holes++
			if !bytes.Equal(model[x.Off:x.Off+x.Len], make([]byte, x.Len)) {
				t.Fatalf("hole %+v holds data", x)
			}
		}
		pos += x.Len
	}
	if pos != d.Size() {
		t.Fatalf("extents cover %d of %d", pos, d.Size())
	}
}

func TestDiskScatteredWritesCost(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	const size = 4 << 30
	d := newDisk(t, e, "vm", size, 0)
	// A first full revision would dominate memory here; the cost that
	// matters is what the scattered writes add on top of it.
	before := e.cs.Added()
	rng := rand.New(rand.NewSource(5))
	p := make([]byte, 4096)
	for i := 0; i < 1000; i++ {
		rng.Read(p)
		if _, err := d.WriteAt(ctx, p, rng.Int63n(size/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	added := e.cs.Added() - before
	if added > 128<<20 {
		t.Fatalf("1000 scattered 4 KiB writes added %d MiB", added>>20)
	}
	if rev.Added < added-1<<20 || rev.Size != size {
		t.Errorf("revision reports added %d (store saw %d), size %d", rev.Added, added, rev.Size)
	}
	t.Logf("added %d MiB for 1000 scattered 4 KiB writes", added>>20)
}

// BenchmarkDiskSequentialWrite measures a full sequential write of a
// 256 MiB disk (random data, 1 MiB requests) plus commit, per block size.
func BenchmarkDiskSequentialWrite(b *testing.B) {
	for _, bs := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("bs=%dKiB", bs>>10), func(b *testing.B) {
			ctx := context.Background()
			const size = 256 << 20
			data := make([]byte, size)
			rand.New(rand.NewSource(1)).Read(data)
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := &env{cs: memstore.New(), spool: b.TempDir(), dir: b.TempDir()}
				e.open(b)
				d := newDisk(b, e, "vm", size, bs)
				b.StartTimer()
				for off := int64(0); off < size; off += 1 << 20 {
					if _, err := d.WriteAt(ctx, data[off:off+1<<20], off); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDiskBufferedWrites checks that partial-block writes collect in the
// staging buffer: 24 interleaved 4 KiB writes into two 64 KiB blocks (half
// of a stored one, all of a new one) store nothing until Flush, then two
// blocks, not one per write, and read back before and after it.
func TestDiskBufferedWrites(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false)
	const bs = 64 << 10
	d := newDisk(t, e, "vm", 1<<20, bs)
	rng := rand.New(rand.NewSource(11))
	model := make([]byte, 1<<20)
	rng.Read(model[:bs])
	if _, err := d.WriteAt(ctx, model[:bs], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.Commit(ctx, "vm", layers.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	before := e.cs.Added()
	p := make([]byte, 4096)
	for i := range 16 {
		// Interleave blocks 0 and 3; block 0 keeps half its stored bytes.
		for _, off := range []int64{int64(i) * 4096, 3*bs + int64(i)*4096} {
			if off < bs && i%2 == 1 {
				continue
			}
			rng.Read(p)
			if _, err := d.WriteAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
	}
	if got := e.cs.Added() - before; got != 0 {
		t.Errorf("%d bytes stored before any Flush; writes should be buffered", got)
	}
	if got := readAll(t, d); !bytes.Equal(got, model) {
		t.Fatal("buffered writes do not read back")
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.cs.Added() - before; got != 2*bs {
		t.Errorf("Flush after 24 partial writes to two blocks stored %d bytes, want %d (two blocks)", got, 2*bs)
	}
	if got := readAll(t, d); !bytes.Equal(got, model) {
		t.Fatal("flushed writes do not read back")
	}
}

// reserveStore refuses data chunks while full is set, as a store at its
// reserve does; metadata still goes in.
type reserveStore struct {
	*memstore.Store
	full atomic.Bool
}

func (s *reserveStore) Put(ctx context.Context, kind chunk.Kind, data []byte) (chunk.ID, bool, error) {
	if s.full.Load() && kind == chunk.KindData {
		return chunk.ID{}, false, fmt.Errorf("put chunk: %w", syscall.ENOSPC)
	}
	return s.Store.Put(ctx, kind, data)
}

// TestDiskZeroWhenFull fills a block volume's store while writing, then
// zeroes and trims what did not fit.
// Pass: writes fail with ErrNoSpace once the buffer is over its bound;
// zeroing part of the unstored range and trimming the rest succeed (the
// blocks become holes, which need no space); then the flush and the
// commit go through and the disk reads the data stored before the store
// filled, and zeros after.
func TestDiskZeroWhenFull(t *testing.T) {
	ctx := context.Background()
	cs := &reserveStore{Store: memstore.New()}
	r, err := layers.Open(ctx, openDB(t, ""), cs, layers.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	const bs, size = 1 << 20, 256 << 20
	if _, err := r.CreateVolume(ctx, "vm", layers.VolumeSpec{Type: layers.TypeBlock, Size: size, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	d, err := r.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("stored before the store filled "), 1<<18)[:4*bs]
	if _, err := d.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cs.full.Store(true)
	blk := bytes.Repeat([]byte{0xa5}, bs)
	var off int64 = 8 * bs
	for ; off < size; off += bs {
		if _, err = d.WriteAt(ctx, blk, off); err != nil {
			break
		}
	}
	if !errors.Is(err, layers.ErrNoSpace) {
		t.Fatalf("writing into a full store: %v at %d MiB, want ErrNoSpace", err, off>>20)
	}
	mid := 8*bs + (off-8*bs)/2
	if _, err := d.WriteAt(ctx, make([]byte, mid-8*bs), 8*bs); err != nil {
		t.Fatalf("zeroing unstored blocks of a full store: %v", err)
	}
	if err := d.Zero(ctx, mid, off+bs-mid); err != nil {
		t.Fatalf("trimming unstored blocks of a full store: %v", err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatalf("flush after zeroing what did not fit: %v", err)
	}
	if _, err := r.Commit(ctx, "vm", layers.CommitOptions{}); err != nil {
		t.Fatalf("commit after zeroing what did not fit: %v", err)
	}
	got := readAll(t, d)
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, size-len(data))) {
		t.Fatal("disk after zeroing: want the data stored before the store filled, then zeros")
	}
}
