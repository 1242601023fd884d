package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/nbd"
)

type nbdCmd struct {
	Serve nbdServeCmd `cmd:"" help:"Serve block volumes: export NAME is staging (read-write), NAME@REV a revision (read-only)."`
	Stop  nbdStopCmd  `cmd:"" help:"Stop serving on an address."`
}

type nbdServeCmd struct {
	Listen      string   `default:"tcp://127.0.0.1:10809" help:"Where to listen: tcp://HOST:PORT or unix:PATH. NBD here has no TLS and no authentication: whoever can connect reads every exported revision and writes staging. An address other hosts can reach (0.0.0.0, a LAN address) needs --allow-remote."`
	Export      []string `placeholder:"NAME" help:"Only these export names (NAME or NAME@REV of a block volume; checked now); default every block volume."`
	Overlay     bool     `help:"Revision exports accept writes into a throwaway layer (dropped when serving stops), so a VM can boot from a backup."`
	AllowRemote bool     `help:"Allow a --listen address other hosts can reach, unencrypted and unauthenticated (a warning is printed). Prefer loopback or unix: with an SSH tunnel."`
}

func (c *nbdServeCmd) Help() string {
	return `Starts serving in the background (in the repository's server, started if
none runs) and returns; 'strata nbd stop --listen ADDR' ends it.

Exports, as clients name them:
  NAME            the staging disk of block volume NAME, read-write
  NAME@REV        a revision, read-only (REV: latest, an id prefix, ~N, a tag,
                  a date, an age like 3d); with --overlay, writable into a
                  throwaway layer that all connections to that export share
                  and that lasts until serving stops

Client URIs: nbd://127.0.0.1/NAME (the default --listen) or
nbd+unix:///NAME?socket=PATH for --listen unix:PATH. 'nbdinfo --list URI'
lists the exports (every block volume, its @latest and its revisions).

Writes are durable at FLUSH: a crash of the server loses what a client wrote
since its last FLUSH (use 'nbdcopy --flush', 'dd conv=fsync'), and the next
commit then refuses until --allow-lost. TRIM and WRITE_ZEROES punch holes:
zeros are never stored. A revision served here is not removed by prune while
a client reads it or --export names it.

There is no TLS and no authentication: serve on loopback or a unix socket and
reach it through SSH; an address other hosts reach needs --allow-remote.
'strata status' lists the connections; 'strata stop' refuses while clients are
connected.`
}

type nbdServeArgs struct {
	Listen      string   `json:"listen"`
	Exports     []string `json:"exports,omitempty"`
	Overlay     bool     `json:"overlay,omitempty"`
	AllowRemote bool     `json:"allow_remote,omitempty"`
}

type nbdInfo struct {
	Listen  string   `json:"listen"`
	Exports []string `json:"exports,omitempty"`
	Overlay bool     `json:"overlay,omitempty"`
	// Remote: other hosts can reach Listen (served with --allow-remote).
	Remote bool `json:"remote,omitempty"`
	// Clients counts the connections open now, by the export name
	// clients gave ("vm" for staging, "vm@latest", "vm@<id>"); filled in
	// by status.
	Clients map[string]int `json:"clients,omitempty"`
}

func (c *nbdServeCmd) Run(ctx context.Context, g *Globals) error {
	listen := c.Listen
	if strings.HasPrefix(listen, "unix:") {
		p := strings.TrimPrefix(strings.TrimPrefix(listen, "unix:"), "//")
		if !strings.HasPrefix(p, "/") {
			wd, _ := os.Getwd()
			p = wd + "/" + p
		}
		listen = "unix:" + p
	}
	var info nbdInfo
	if err := call(ctx, g, "nbd.serve", nbdServeArgs{listen, c.Export, c.Overlay, c.AllowRemote}, &info); err != nil {
		return err
	}
	if info.Remote {
		fmt.Fprintf(os.Stderr, "strata: WARNING: %s can be reached from other hosts: NBD has no encryption or authentication here, so anyone who can connect reads every exported revision and writes staging\n", listen)
	}
	if g.JSON {
		return printJSON(info)
	}
	fmt.Printf("serving NBD on %s; 'strata nbd stop --listen %s' to stop\n", info.Listen, info.Listen)
	return nil
}

type nbdStopCmd struct {
	Listen string `default:"tcp://127.0.0.1:10809" help:"The address given to nbd serve."`
}

func (c *nbdStopCmd) Run(ctx context.Context, g *Globals) error {
	return call(ctx, g, "nbd.stop", nbdServeArgs{Listen: c.Listen}, nil)
}

// nbdEntry is one listening NBD server inside the repository server.
type nbdEntry struct {
	nbdInfo
	srv *nbd.Server
	res *nbdResolver
	l   net.Listener
}

func (n *nbdEntry) close() error {
	err := n.srv.Close()
	n.res.closeAll()
	return err
}

func opNBDServe(ctx context.Context, env *opEnv, a nbdServeArgs) (_ any, err error) {
	s := env.srv
	if err := s.refuseIfStopping(); err != nil {
		return nil, err
	}
	// A server started on demand for this request has nothing else to do.
	defer func() {
		if err != nil {
			s.maybeExit()
		}
	}()
	s.mu.Lock()
	_, dup := s.nbds[a.Listen]
	s.mu.Unlock()
	if dup {
		return nil, fail(exitError, "", "already serving NBD on %s", a.Listen)
	}
	remote := remoteAddr(ctx, a.Listen)
	if remote {
		if !a.AllowRemote {
			return nil, fail(exitUsage, "listen on loopback (tcp://127.0.0.1:PORT) or unix:PATH and reach it through an SSH tunnel; or pass --allow-remote (\"allow_remote\": true in a server config) to serve it anyway",
				"nbd serve: %s can be reached from other hosts, and NBD here has no encryption or authentication: anyone who could connect would read every exported revision and write staging", a.Listen)
		}
		s.log.Warn("nbd: serving on an address other hosts can reach, unencrypted and unauthenticated (--allow-remote)", "listen", a.Listen)
	}
	// Names are checked now, not when a client connects and gets only
	// "unknown export".
	for _, name := range a.Exports {
		if _, _, err := lookupExport(ctx, env.repo.layers, name); err != nil {
			return nil, err
		}
	}
	l, err := nbd.Listen(ctx, a.Listen)
	if err != nil {
		return nil, fail(exitError, "use tcp://HOST:PORT or unix:PATH, and an address nothing else listens on", "nbd serve: %v", err)
	}
	res := &nbdResolver{repo: env.repo.layers, only: a.Exports, overlay: a.Overlay, open: map[string]*lazyOverlay{}}
	// Every connection to the staging export shares one Disk, so a FLUSH on
	// any covers them all: safe to let nbdcopy open several.
	srv := nbd.NewServer(res, nbd.Options{Logger: s.log, WritableMultiConn: true})
	e := &nbdEntry{nbdInfo: nbdInfo{Listen: a.Listen, Exports: a.Exports, Overlay: a.Overlay, Remote: remote}, srv: srv, res: res, l: l}
	s.mu.Lock()
	s.nbds[a.Listen] = e
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Serve's context is the server's lifetime, not this request's.
		if err := srv.Serve(context.Background(), l); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("nbd serve", "listen", a.Listen, "err", err)
		}
		s.mu.Lock()
		delete(s.nbds, a.Listen)
		s.mu.Unlock()
		s.maybeExit()
	}()
	return e.nbdInfo, nil
}

// remoteAddr reports whether a --listen address can be reached from other
// hosts: tcp:// on anything but loopback (an empty host or 0.0.0.0 is
// every interface; a name counts as loopback only if all it resolves to
// is). unix: sockets are local.
func remoteAddr(ctx context.Context, listen string) bool {
	hostport, ok := strings.CutPrefix(listen, "tcp://")
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false // nbd.Listen reports it
	}
	if host == "localhost" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil || host == "" {
		return ip == nil || !ip.IsLoopback()
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return false // listening will fail on it too
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return true
		}
	}
	return false
}

// lookupExport finds what export name serves: block volume vol's staging
// (rev "") or its revision rev, resolved. Its errors say what is wrong and
// what would be right.
func lookupExport(ctx context.Context, lr *layers.Repo, name string) (vol string, rev layers.Revision, err error) {
	vol, spec, path := splitTarget(name)
	blockVols := func() string {
		vols, err := lr.Volumes(ctx)
		if err != nil {
			return ""
		}
		var names []string
		for _, v := range vols {
			if v.Type == layers.TypeBlock {
				names = append(names, v.Name)
			}
		}
		if len(names) == 0 {
			return "there are no block volumes; 'strata volume create NAME --block SIZE' makes one"
		}
		return "block volumes: " + strings.Join(names, ", ") + " (NAME serves staging, NAME@REV a revision)"
	}
	info, err := lr.Volume(ctx, vol)
	if errors.Is(err, layers.ErrUnknownVolume) {
		return vol, rev, fail(exitUsage, blockVols(), "--export %s: no volume named %q", name, vol)
	}
	if err != nil {
		return vol, rev, volumeErr(err, vol)
	}
	if info.Type != layers.TypeBlock {
		return vol, rev, fail(exitUsage, blockVols(), "--export %s: %s is a file-tree volume; use 'strata mount %s MNT'", name, vol, name)
	}
	if path != "" {
		return vol, rev, fail(exitUsage, "export the whole disk: "+vol+"@"+spec, "--export %s: %s is a block volume, with no paths inside", name, vol)
	}
	if spec != "" {
		// The error names the spec and lists the candidates.
		rev, err = resolve(ctx, lr, vol, spec)
	}
	return vol, rev, err
}

func opNBDStop(ctx context.Context, env *opEnv, a nbdServeArgs) (any, error) {
	s := env.srv
	s.mu.Lock()
	e, ok := s.nbds[a.Listen]
	s.mu.Unlock()
	if !ok {
		return nil, fail(exitError, "'strata status' lists what is served", "not serving NBD on %s", a.Listen)
	}
	return nil, e.close()
}

// serves reports whether the NBD server may export volume vol of type
// typ: a block volume, when it serves all of them or vol is among its
// exports. It never serves a file tree, so one is free to remove while
// a server without --export runs.
func (n *nbdEntry) serves(vol string, typ layers.VolumeType) bool {
	if typ != layers.TypeBlock {
		return false
	}
	return len(n.Exports) == 0 || slices.ContainsFunc(n.Exports, func(x string) bool {
		name, _, _ := splitTarget(x)
		return name == vol
	})
}

// nbdResolver maps export names to disks: NAME → staging, NAME@REV → a
// revision (read-only, or a throwaway overlay with --overlay). Overlays
// live as long as the NBD server, so a VM can reconnect to its changes.
type nbdResolver struct {
	repo    *layers.Repo
	only    []string
	overlay bool

	mu   sync.Mutex
	open map[string]*lazyOverlay // guarded by mu; overlays by export name
	// reading counts the connections reading each revision ("vol@id"), so
	// prune defers removing it as it does for a mounted one: a removed
	// revision's blocks would read as zeros. Guarded by mu.
	reading map[string]int
}

// tracked is a revision export that counts as read until the server
// closes it, after its last connection.
type tracked struct {
	diskExport
	done func()
}

func (t *tracked) Close() error {
	var err error
	if c, ok := t.diskExport.(io.Closer); ok {
		err = c.Close()
	}
	t.done()
	return err
}

// holdLocked counts one more reader of the revision key; mu held.
func (r *nbdResolver) holdLocked(key string) {
	if r.reading == nil {
		r.reading = map[string]int{}
	}
	r.reading[key]++
}

// hold counts one more reader of the revision key until the returned
// func runs.
func (r *nbdResolver) hold(key string) func() {
	r.mu.Lock()
	r.holdLocked(key)
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.reading[key]--; r.reading[key] <= 0 {
				delete(r.reading, key)
			}
		})
	}
}

// addServed adds to in the ids of vol's revisions read through this
// export set now or named by one of its --export specs.
func (r *nbdResolver) addServed(ctx context.Context, vol string, in map[string]bool) {
	r.mu.Lock()
	for key := range r.reading {
		if v, id, _ := strings.Cut(key, "@"); v == vol {
			in[id] = true
		}
	}
	r.mu.Unlock()
	for _, name := range r.only {
		v, rev, _ := splitTarget(name)
		if v != vol || rev == "" {
			continue
		}
		if rv, err := resolve(ctx, r.repo, v, rev); err == nil {
			in[rv.ID] = true
		}
	}
}

func (r *nbdResolver) Open(ctx context.Context, name string) (nbd.Export, error) {
	if len(r.only) > 0 && !slices.Contains(r.only, name) {
		return nil, nbd.ErrUnknownExport
	}
	vol, rv, err := lookupExport(ctx, r.repo, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
	}
	if rv.ID == "" {
		d, err := r.repo.StagingDisk(ctx, vol)
		if err != nil {
			return nil, err
		}
		return noClose{d}, nil
	}
	if !r.overlay {
		d, err := r.repo.RevisionDisk(ctx, vol, rv.ID)
		if err != nil {
			return nil, err
		}
		// Closed by the nbd server when the connection ends.
		return &tracked{diskExport: d, done: r.hold(vol + "@" + rv.ID)}, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.open[name]; ok {
		return noClose{d}, nil
	}
	base, err := r.repo.RevisionDisk(ctx, vol, rv.ID)
	if err != nil {
		return nil, err
	}
	// Overlays live until serving stops (closeAll), and so does the hold.
	r.holdLocked(vol + "@" + rv.ID)
	ov := &lazyOverlay{base: base}
	r.open[name] = ov
	return noClose{ov}, nil
}

func (r *nbdResolver) List(ctx context.Context) ([]string, error) {
	if len(r.only) > 0 {
		return r.only, nil
	}
	vols, err := r.repo.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	// Staging, then latest and every revision by id (newest first): the
	// names a user can pass on to qemu or nbdcopy as they are.
	var out []string
	for _, v := range vols {
		if v.Type != layers.TypeBlock {
			continue
		}
		out = append(out, v.Name)
		revs, err := r.repo.Revisions(ctx, v.Name)
		if err != nil {
			return nil, fmt.Errorf("list revisions of %s: %w", v.Name, err)
		}
		if len(revs) > 0 {
			out = append(out, v.Name+"@latest")
		}
		for i := len(revs) - 1; i >= 0; i-- {
			out = append(out, v.Name+"@"+revs[i].ID)
		}
	}
	return out, nil
}

func (r *nbdResolver) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, d := range r.open {
		d.Close()
		delete(r.open, name)
	}
}

// diskExport is what the resolver hands out: a *layers.Disk or an overlay.
type diskExport interface {
	nbd.Export
	nbd.Flusher
	nbd.Zeroer
	nbd.Extenter
	nbd.BlockSizer
}

// noClose hides Close from the nbd server for disks that outlive a
// connection (staging, overlays).
type noClose struct{ diskExport }

func (n noClose) Close() error { return nil }

// lazyOverlay is a revision served read-write for --overlay. Its
// copy-on-write layer (a spool file) is made on the first write, so
// exports that are only listed (nbdinfo --list opens each) or read cost
// nothing beyond the revision.
type lazyOverlay struct {
	base *layers.Disk

	mu sync.RWMutex
	ov *layers.Disk // guarded by mu; nil until the first write
}

// view is where reads go: the overlay once there is one.
func (l *lazyOverlay) view() *layers.Disk {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.ov != nil {
		return l.ov
	}
	return l.base
}

func (l *lazyOverlay) writable(ctx context.Context) (*layers.Disk, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ov == nil {
		ov, err := l.base.Overlay(ctx)
		if err != nil {
			return nil, err
		}
		l.ov = ov
	}
	return l.ov, nil
}

func (l *lazyOverlay) Size() int64                 { return l.base.Size() }
func (l *lazyOverlay) ReadOnly() bool              { return false }
func (l *lazyOverlay) BlockSize() int              { return l.base.BlockSize() }
func (l *lazyOverlay) Flush(context.Context) error { return nil } // throwaway

func (l *lazyOverlay) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return l.view().ReadAt(ctx, p, off)
}

func (l *lazyOverlay) Extents(ctx context.Context, off, length int64) ([]layers.Extent, error) {
	return l.view().Extents(ctx, off, length)
}

func (l *lazyOverlay) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	d, err := l.writable(ctx)
	if err != nil {
		return 0, err
	}
	return d.WriteAt(ctx, p, off)
}

func (l *lazyOverlay) Zero(ctx context.Context, off, length int64) error {
	d, err := l.writable(ctx)
	if err != nil {
		return err
	}
	return d.Zero(ctx, off, length)
}

// Close drops the overlay's writes and releases the revision.
func (l *lazyOverlay) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.ov != nil {
		err = l.ov.Close()
		l.ov = nil
	}
	return errors.Join(err, l.base.Close())
}

// stagingClients counts the NBD connections to vol's staging, over every
// address served.
func (s *server) stagingClients(vol string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.nbds {
		n += e.srv.Connections()[vol]
	}
	return n
}

// nbdClients describes the NBD connections open now, one line per address
// served ("NBD clients on unix:/run/x.sock: vm (staging) x2"), for stop.
func (s *server) nbdClients() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.nbds {
		c := e.srv.Connections()
		if len(c) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("NBD clients connected on %s: %s", e.Listen, describeClients(c)))
	}
	slices.Sort(out)
	return out
}

// describeClients renders connection counts by export name:
// "vm (staging) ×2, vm@1a2b… ×1".
func describeClients(c map[string]int) string {
	var names []string
	for name, n := range c {
		if !strings.Contains(name, "@") {
			name += " (staging)"
		}
		names = append(names, fmt.Sprintf("%s ×%d", name, n))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
