package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRandomOps applies one seeded random sequence of operations (writes
// at random offsets, truncates, renames, links, unlinks, mkdir/rmdir,
// chmod, xattrs) to a staging mount and to a plain directory in lockstep:
// every operation must succeed or fail alike, and the touched file must
// read back the same after every step; the whole trees are compared
// every 25 steps and at the end.
func TestRandomOps(t *testing.T) {
	r := testRepo(t)
	st := testStaging(t, r, "fsx")
	mnt := mountDir(t)
	m, err := MountStaging(context.Background(), mnt, st, testOpts(t, r))
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	ref := t.TempDir()

	rnd := rand.New(rand.NewSource(7))
	names := []string{"a", "b", "c", "d/e", "d/f", "g/h", "i"}
	dirs := []string{"d", "g"}
	pick := func() string { return names[rnd.Intn(len(names))] }
	buf := make([]byte, 300<<10)

	type op struct {
		desc string
		fn   func(root string) error
	}
	next := func() op {
		p, q := pick(), pick()
		switch k := rnd.Intn(11); k {
		case 0, 1, 2:
			off := rnd.Int63n(600 << 10)
			n := rnd.Intn(len(buf))
			seed := rnd.Int63()
			return op{fmt.Sprintf("write %s %d+%d", p, off, n), func(root string) error {
				rand.New(rand.NewSource(seed)).Read(buf[:n])
				f, err := os.OpenFile(filepath.Join(root, p), os.O_WRONLY|os.O_CREATE, 0o644)
				if err != nil {
					return err
				}
				_, err = f.WriteAt(buf[:n], off)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				return err
			}}
		case 3:
			n := rnd.Int63n(700 << 10)
			return op{fmt.Sprintf("truncate %s %d", p, n), func(root string) error { return os.Truncate(filepath.Join(root, p), n) }}
		case 4:
			return op{fmt.Sprintf("rename %s %s", p, q), func(root string) error {
				return os.Rename(filepath.Join(root, p), filepath.Join(root, q))
			}}
		case 5:
			return op{fmt.Sprintf("link %s %s", p, q), func(root string) error { return os.Link(filepath.Join(root, p), filepath.Join(root, q)) }}
		case 6:
			return op{"unlink " + p, func(root string) error { return os.Remove(filepath.Join(root, p)) }}
		case 7:
			d := dirs[rnd.Intn(len(dirs))]
			if rnd.Intn(2) == 0 {
				return op{"mkdir " + d, func(root string) error { return os.Mkdir(filepath.Join(root, d), 0o755) }}
			}
			return op{"rmdir " + d, func(root string) error { return unix.Rmdir(filepath.Join(root, d)) }}
		case 8:
			mode := os.FileMode(rnd.Intn(0o777)) | 0o600
			return op{fmt.Sprintf("chmod %s %o", p, mode), func(root string) error { return os.Chmod(filepath.Join(root, p), mode) }}
		case 9:
			v := []byte(fmt.Sprint(rnd.Int()))
			return op{"setxattr " + p, func(root string) error { return unix.Setxattr(filepath.Join(root, p), "user.k", v, 0) }}
		default:
			return op{"append " + p, func(root string) error {
				f, err := os.OpenFile(filepath.Join(root, p), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
				if err != nil {
					return err
				}
				_, err = f.Write([]byte("appended\n"))
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				return err
			}}
		}
	}
	errnoOf := func(err error) error {
		var e syscall.Errno
		if errors.As(err, &e) {
			return e
		}
		return err
	}
	for step := 0; step < 300; step++ {
		o := next()
		e1, e2 := o.fn(ref), o.fn(mnt)
		if errnoOf(e1) != errnoOf(e2) {
			t.Fatalf("step %d %s: plain dir %v, staging %v", step, o.desc, e1, e2)
		}
		for _, p := range names {
			a, aerr := os.ReadFile(filepath.Join(ref, p))
			b, berr := os.ReadFile(filepath.Join(mnt, p))
			if errnoOf(aerr) != errnoOf(berr) || !bytes.Equal(a, b) {
				t.Fatalf("step %d %s: %s differs (plain %d bytes %v, staging %d bytes %v)", step, o.desc, p, len(a), aerr, len(b), berr)
			}
		}
		if step%25 == 24 {
			compareTrees(t, ref, mnt)
		}
	}
	compareTrees(t, ref, mnt)
}

// compareTrees compares names, types, permission bits, sizes, link
// counts and user xattrs of two trees.
func compareTrees(t *testing.T, a, b string) {
	t.Helper()
	type info struct {
		mode  fs.FileMode
		size  int64
		nlink uint64
		xattr string
	}
	walk := func(root string) map[string]info {
		m := map[string]info{}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			v := make([]byte, 64)
			n, _ := unix.Lgetxattr(p, "user.k", v)
			rel, _ := filepath.Rel(root, p)
			i := info{mode: fs.FileMode(st.Mode), nlink: uint64(st.Nlink), xattr: string(v[:max(n, 0)])}
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				i.size = st.Size
			} else {
				i.nlink = 0 // directory link counts differ by design
			}
			m[rel] = i
			return nil
		})
		return m
	}
	ma, mb := walk(a), walk(b)
	for k, va := range ma {
		if vb, ok := mb[k]; !ok || va != vb {
			t.Errorf("%s: plain %+v, staging %+v (present %v)", k, va, vb, ok)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			t.Errorf("%s only in staging", k)
		}
	}
}
