package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/strata-backup/strata/layers"
)

// Benchmarks compare strata mounts with a plain directory on the same
// disk, on the Go toolchain tree (`go env GOROOT`, ~270 MB, ~15k files).
// Run with -benchtime=1x: one iteration is one whole copy or read.
//
//	go test -run '^$' -bench . -benchtime=1x ./fs/

func benchCorpus(b *testing.B) (string, int64) {
	b.Helper()
	root := runtime.GOROOT()
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		root = strings.TrimSpace(string(out))
	}
	var size int64
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	return root, size
}

func benchRun(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// benchStaging mounts the staging head of a new volume "bench" of a new
// repository.
func benchStaging(b *testing.B) (*layers.Repo, string, *Mount) {
	b.Helper()
	r := testRepo(b)
	st := testStaging(b, r, "bench")
	mnt := mountDir(b)
	m, err := MountStaging(context.Background(), mnt, st, Options{Repo: r})
	if err != nil {
		b.Fatal(err)
	}
	return r, mnt, m
}

// BenchmarkRsync: rsync -a of the corpus into a plain directory and into
// a staging mount (each iteration a fresh destination; the staging run
// includes the final Sync, i.e. unmount-durable data).
func BenchmarkRsync(b *testing.B) {
	src, size := benchCorpus(b)
	b.Run("plain", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			dst := b.TempDir()
			benchRun(b, "rsync", "-a", src+"/", dst+"/")
			benchRun(b, "sync", "-f", dst)
		}
	})
	b.Run("staging", func(b *testing.B) {
		b.SetBytes(size)
		for i := range b.N {
			b.StopTimer()
			_, mnt, m := benchStaging(b)
			b.StartTimer()
			benchRun(b, "rsync", "-a", src+"/", mnt+"/")
			if err := m.Unmount(); err != nil {
				b.Fatal(err)
			}
			_ = i
		}
	})
}

// BenchmarkColdRead: `tar cf - . | cat >/dev/null` after dropping the
// page cache, from a plain directory and from a revision mount.
func BenchmarkColdRead(b *testing.B) {
	src, size := benchCorpus(b)
	plain := b.TempDir()
	benchRun(b, "rsync", "-a", src+"/", plain+"/")

	r, mnt, m := benchStaging(b)
	benchRun(b, "rsync", "-a", src+"/", mnt+"/")
	if err := m.Unmount(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	tree := commitTree(b, r, "bench")
	rmnt := mountDir(b)
	rm, err := MountTree(ctx, rmnt, tree, Options{Repo: r})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rm.Unmount() })

	for _, c := range []struct{ name, dir string }{{"plain", plain}, {"revision", rmnt}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				b.StopTimer()
				dropCaches(b)
				b.StartTimer()
				benchRun(b, "sh", "-c", "cd "+c.dir+" && tar cf - . | cat >/dev/null")
			}
		})
	}
}
