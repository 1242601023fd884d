package nbd_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	ctx := context.Background()

	// A socket file nobody answers on is replaced.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket setup: %v", err)
	}
	l, err = nbd.Listen(ctx, "unix:"+sock)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer l.Close()
	// A live one is not.
	if l2, err := nbd.Listen(ctx, "unix://"+sock); err == nil {
		l2.Close()
		t.Errorf("listen on a live socket succeeded")
	}
	for _, bad := range []string{"unix:", "127.0.0.1:10809", "http://x"} {
		if l, err := nbd.Listen(ctx, bad); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	tl, err := nbd.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl.Close()
}

// TestServeCancel checks that cancelling Serve's context stops it, drops
// its connections and closes their exports, and that the server goes on
// serving elsewhere.
func TestServeCancel(t *testing.T) {
	m := nbdtest.NewMem(1<<20, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"d": m}), nbd.Options{})
	l, err := nbd.Listen(context.Background(), "unix:"+filepath.Join(t.TempDir(), "x.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, l) }()

	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{t: t, c: c, r: newReader(c)}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	rc.connect("d", false, false)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v, want nil", err)
	}
	rc.expectClosed()
	if m.Closes() != 1 {
		t.Errorf("export closed %d times after its only connection was dropped", m.Closes())
	}
	// The other listeners still work.
	rc2 := dialRaw(t, ts)
	rc2.connect("d", false, false)
}

func TestKeepOpen(t *testing.T) {
	m := nbdtest.NewMem(1<<20, nbdtest.MemOptions{})
	r := nbdtest.NewResolver(map[string]nbd.Export{"d": m})
	ts := startServer(t, r, nbd.Options{KeepOpen: true})
	for range 3 {
		rc := dialRaw(t, ts)
		rc.connect("d", false, false)
		rc.request(0, cmdDisc, 0, 0, 0, nil)
		rc.expectClosed()
	}
	if r.Opens("d") != 1 || m.Closes() != 0 {
		t.Errorf("with KeepOpen: %d opens and %d closes after three connections; want 1 and 0", r.Opens("d"), m.Closes())
	}
	ts.srv.Close()
	if m.Closes() != 1 {
		t.Errorf("with KeepOpen: %d closes after Close, want 1", m.Closes())
	}
}

// TestCloseWithClients checks that Close returns with connections open
// and requests in flight.
func TestCloseWithClients(t *testing.T) {
	m := nbdtest.NewMem(64<<20, nbdtest.MemOptions{})
	ts := startServer(t, nbdtest.NewResolver(map[string]nbd.Export{"d": m}), nbd.Options{})
	var clients []*rawClient
	for i := range 4 {
		rc := dialRaw(t, ts)
		if i < 3 {
			rc.connect("d", i%2 == 0, false)
			for h := range uint64(16) {
				rc.request(0, cmdRead, h, h<<20, 1<<20, nil)
			}
		} else {
			rc.hello(3) // stuck in negotiation
		}
		clients = append(clients, rc)
	}
	ts.srv.Close()
	for _, rc := range clients {
		rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := rc.r.Discard(1 << 30)
		if err == nil || strings.Contains(err.Error(), "timeout") {
			t.Errorf("connection still open after Close: %v", err)
		}
	}
}
