package fs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/layers"
)

// TestDiskImage: dd an ext4 image made by mkfs.ext4 -d into a staging
// disk.img, compare, punch a hole, commit, and loop-mount the revision's
// read-only disk.img.
func TestDiskImage(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "dd", "cmp", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required", tool)
		}
	}
	ctx := context.Background()
	r := testRepo(t)
	const size = 64 << 20
	if _, err := r.CreateVolume(ctx, "vm", layers.VolumeSpec{Type: layers.TypeBlock, Size: size}); err != nil {
		t.Fatal(err)
	}
	d, err := r.StagingDisk(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountDir(t)
	m, err := MountDisk(ctx, mnt, d, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	img := filepath.Join(mnt, DiskImageName)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Fatalf("disk.img size %d, want %d", fi.Size(), size)
	}

	base := t.TempDir()
	content := filepath.Join(base, "content")
	if err := os.MkdirAll(filepath.Join(content, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := []byte("strata block volume marker\n")
	if err := os.WriteFile(filepath.Join(content, "etc", "marker"), marker, 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "ext4.img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", content, src, "32M")
	run(t, "dd", "if="+src, "of="+img, "bs=4M", "conv=notrunc,fsync", "status=none")
	run(t, "cmp", "-n", strconv.Itoa(32<<20), src, img)

	// Punch a hole in the unused tail; it reads back as zeros.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	tail := bytes.Repeat([]byte{0xab}, 2<<20)
	if _, err := f.WriteAt(tail, 40<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 40<<20, 1<<20); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	got := make([]byte, 2<<20)
	if _, err := f.ReadAt(got, 40<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) || !bytes.Equal(got[1<<20:], tail[1<<20:]) {
		t.Error("punched range does not read as zeros, or the rest changed")
	}
	// Writing at the end fails; the size is fixed.
	if _, err := f.WriteAt([]byte("x"), size); !isErrno(err, syscall.ENOSPC) && !isErrno(err, syscall.EFBIG) {
		t.Errorf("write past end: %v, want ENOSPC", err)
	}
	if err := f.Truncate(size / 2); err == nil {
		t.Error("truncate of disk.img succeeded")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rev, err := r.Commit(ctx, "vm", layers.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := r.RevisionDisk(ctx, "vm", rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	rmnt := mountDir(t)
	rm, err := MountDisk(ctx, rmnt, rd, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, rm)
	rimg := filepath.Join(rmnt, DiskImageName)
	run(t, "cmp", "-n", strconv.Itoa(32<<20), src, rimg)
	if err := os.WriteFile(rimg, []byte("x"), 0o644); !isErrno(err, syscall.EROFS) {
		t.Errorf("write to revision disk.img: %v, want EROFS", err)
	}

	loop := mountDir(t)
	run(t, "mount", "-o", "loop,ro", rimg, loop)
	defer run(t, "umount", loop)
	b, err := os.ReadFile(filepath.Join(loop, "etc", "marker"))
	if err != nil || !bytes.Equal(b, marker) {
		t.Errorf("marker through loop mount: %q, %v", b, err)
	}
}
