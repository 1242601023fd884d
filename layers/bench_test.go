package layers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// BenchmarkCreateWriteFlush measures the metadata path rsync drives per
// small file: create a temp name, write, close, set times, rename.
func BenchmarkCreateWriteFlush(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, true)
	st := e.staging(b, "v")
	d, err := st.Mkdir(ctx, layers.RootIno, "d", 0o755, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 8<<10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data[0], data[1] = byte(i), byte(i>>8)
		tmp := fmt.Sprintf(".f%d.tmp", i)
		a, err := st.Create(ctx, d.Ino, tmp, 0o644, 0, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
			b.Fatal(err)
		}
		if err := st.FlushFile(ctx, a.Ino, false); err != nil {
			b.Fatal(err)
		}
		mt := a.Mtime
		if _, err := st.SetAttr(ctx, a.Ino, layers.SetAttr{Mtime: &mt, Atime: &mt}); err != nil {
			b.Fatal(err)
		}
		if err := st.Rename(ctx, d.Ino, tmp, d.Ino, fmt.Sprintf("f%d", i), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Sync(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRevisionRead reads a committed 64 MiB file in 128 KiB pieces,
// as FUSE does, through a revision tree.
func BenchmarkRevisionRead(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, true)
	st := e.staging(b, "v")
	a, err := st.Create(ctx, layers.RootIno, "big", 0o644, 0, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	const size = 64 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 >> 9)
	}
	if _, err := st.WriteAt(ctx, a.Ino, data, 0); err != nil {
		b.Fatal(err)
	}
	rev, err := e.repo.Commit(ctx, "v", layers.CommitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	tr, err := e.repo.Snapshot(ctx, "v", rev.ID)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := tr.ReadAt(ctx, a.Ino, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}
