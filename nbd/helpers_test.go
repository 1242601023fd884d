package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

// *layers.Disk is the export strata serves: it must have every feature.
var (
	_ nbd.Export                 = (*layers.Disk)(nil)
	_ nbd.Flusher                = (*layers.Disk)(nil)
	_ nbd.Zeroer                 = (*layers.Disk)(nil)
	_ nbd.Extenter               = (*layers.Disk)(nil)
	_ nbd.BlockSizer             = (*layers.Disk)(nil)
	_ interface{ Close() error } = (*layers.Disk)(nil)
)

// testServer is a server listening on a unix socket and on TCP localhost.
type testServer struct {
	srv  *nbd.Server
	sock string // unix socket path
	tcp  string // host:port
}

func (ts *testServer) unixURI(name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, ts.sock)
}

func (ts *testServer) tcpURI(name string) string {
	return fmt.Sprintf("nbd://%s/%s", ts.tcp, name)
}

// logWriter sends server logs to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startServer(t testing.TB, r nbd.Resolver, opts nbd.Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv := nbd.NewServer(r, opts)
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ul, err := nbd.Listen(context.Background(), "unix:"+filepath.Join(dir, "nbd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := nbd.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, l := range []net.Listener{ul, tl} {
		go func() { errs <- srv.Serve(context.Background(), l) }()
	}
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-errs; !errors.Is(err, nbd.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return &testServer{srv: srv, sock: filepath.Join(dir, "nbd.sock"), tcp: tl.Addr().String()}
}

// needTools fails when an NBD client tool is missing: make test installs
// them (contrib/install-deps.sh), so a missing one is a broken setup, not a
// reason to pass. STRATA_SKIP_CLIENTS=1 skips instead, for quick runs.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("STRATA_SKIP_CLIENTS") == "1" {
				t.Skipf("%s not installed: %v", tool, err)
			}
			t.Fatalf("%s not installed (contrib/install-deps.sh installs libnbd-bin, qemu-utils, fio): %v", tool, err)
		}
	}
}

// run runs a command and returns its stdout; it fails the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"), "LIBNBD_DEBUG=0")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// layout describes a test image: which blocks hold data.
type layout struct {
	size  int64
	block int64
	data  []bool
}

// mixedImage returns seeded random contents for a disk of size bytes in
// which about 1 block in 3 is data, in runs, and the rest are zeros.
func mixedImage(seed uint64, size, block int64) ([]byte, layout) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	img := make([]byte, size)
	lay := layout{size: size, block: block, data: make([]bool, size/block)}
	for i := 0; i < len(lay.data); {
		run := 1 + rng.IntN(8)
		isData := rng.IntN(3) == 0
		for j := i; j < min(i+run, len(lay.data)); j++ {
			lay.data[j] = isData
			if isData {
				b := img[int64(j)*block : int64(j+1)*block]
				for k := range b {
					b[k] = byte(rng.Uint32())
				}
				b[0] |= 1 // never an accidental all-zero block
			}
		}
		i += run
	}
	return img, lay
}

// writeSparse writes img to path, leaving its zero blocks as holes.
func writeSparse(t testing.TB, path string, img []byte, block int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(img))); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < int64(len(img)); off += block {
		b := img[off:min(off+block, int64(len(img)))]
		if !bytes.Equal(b, make([]byte, len(b))) {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// memImage returns a Mem disk holding img.
func memImage(t testing.TB, img []byte, opts nbdtest.MemOptions) *nbdtest.Mem {
	t.Helper()
	m := nbdtest.NewMem(int64(len(img)), opts)
	if err := m.Fill(img, 0); err != nil {
		t.Fatal(err)
	}
	return m
}

// memBytes reads the whole disk.
func memBytes(t testing.TB, e nbd.Export) []byte {
	t.Helper()
	b := make([]byte, e.Size())
	if _, err := e.ReadAt(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// firstDiff describes where two images differ, for failure messages.
func firstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("sizes %d and %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d: %#x vs %#x", i, a[i], b[i])
		}
	}
	return "identical"
}

var _ = sync.Mutex{}
