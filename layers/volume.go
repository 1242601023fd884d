package layers

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/strata-backup/strata/store"
)

// repo is the implementation behind Repo.
type repo struct {
	db      *badger.DB
	cs      ChunkStore
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	cache   *chunkCache
	fetches fetches // under way in getChunk
	split   *splitter

	memUsed  atomic.Int64  // bytes of spool buffers held in memory
	spoolSeq atomic.Uint64 // makes spool file names unique
	// storeFull is when a background flush last failed for lack of space
	// (unix ns, 0 = not full). Writers get ErrNoSpace for a while after,
	// since their own data would only fail the same way later, off the
	// request path where nobody sees it.
	storeFull atomic.Int64
	spoolRoom spoolRoom // free space of the spool's filesystem (early.go)

	saveRefs func() error   // before records naming chunks are written (refSaverOf)
	jobs     chan *openFile // files waiting to be chunked
	metaKick chan struct{}  // a volume's pending metadata is a full batch
	tidyKick chan struct{}  // a commit finished: compact the index
	done     chan struct{}  // closed by Close: workers stop
	workers  sync.WaitGroup

	// afterSync, when set (tests), runs in a durable point after the index
	// is synced, before the unsaved marks are settled.
	afterSync atomic.Pointer[func()]

	mu     sync.Mutex // guards vols, closed
	vols   map[string]*volume
	closed bool
}

// volRecord is the stored description of a volume (l/v/<name>).
type volRecord struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Type      VolumeType `json:"type"`
	Size      int64      `json:"size,omitempty"`
	BlockSize int        `json:"block_size,omitempty"`
	Created   time.Time  `json:"created"`
}

// volume is the in-memory state of one volume.
type volume struct {
	r   *Repo
	rec volRecord
	id  volID

	// commitMu makes commit atomic with respect to writes: every staging
	// write holds it shared, Commit holds it exclusively.
	commitMu sync.RWMutex

	// mu serializes metadata mutations of the staging layer and guards
	// nextIno and the staging objects.
	mu       sync.Mutex
	nextIno  uint64 // next inode number to hand out
	inoLimit uint64 // stored counter: numbers below it may be in use
	staging  *Staging
	sdisk    *Disk
	holds    map[Ino]int  // open handles per inode (Staging.Hold)
	orphans  map[Ino]bool // unlinked inodes kept for their holders
	lost     map[Ino]bool // files whose data a crash lost, until rewritten or removed (l/l markers)
	// lostBlocks: blocks of a disk's staging a crash reverted, until a
	// commit with AllowLost (the l/b marker, lostblocks.go).
	lostBlocks lostBlocks
	// unsaved: a file tree's staging holds changes not yet durable, or
	// lost some in a crash (unsaved.go).
	unsaved unsaved

	seq     atomic.Uint64 // the staging layer's seq; changes only under mu and commitMu
	added   atomic.Int64  // bytes of new chunks stored since the last commit (before compression)
	changed atomic.Int64  // Unix ns of the first staging change since the last commit, 0 if none (noteChange)
	removed atomic.Bool   // RemoveVolume ran: staging objects still held refuse writes

	// fresh says which inodes staging created (db.go); set with seq.
	fresh atomic.Pointer[freshMark]

	// pend holds staging metadata writes not yet in badger (pending.go).
	pend *pending

	filesMu sync.Mutex // guards files
	files   map[Ino]*openFile
}

const flushWorkers = 2

func open(ctx context.Context, db *badger.DB, cs ChunkStore, opts Options) (*Repo, error) {
	if opts.SpoolDir == "" {
		return nil, fmt.Errorf("open layers: no spool directory: %w", ErrInvalid)
	}
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("open layers: create spool: %w", err)
	}
	// Spool files are buffers of writes nobody was promised durability
	// for (those were flushed into the store); leftovers of a crash go.
	ents, err := os.ReadDir(opts.SpoolDir)
	if err != nil {
		return nil, fmt.Errorf("open layers: read spool: %w", err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(opts.SpoolDir, e.Name()))
		}
	}
	r := &Repo{repo{db: db, cs: cs, saveRefs: refSaverOf(cs), opts: opts, log: opts.Logger, now: opts.Now,
		vols: map[string]*volume{}, jobs: make(chan *openFile, 64), metaKick: make(chan struct{}, 1),
		tidyKick: make(chan struct{}, 1), done: make(chan struct{})}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.opts.EarlyStore <= 0 {
		r.opts.EarlyStore = defaultEarlyStore
	}
	r.cache = newChunkCache(chunkCacheSize)
	r.split = newSplitter(opts.Chunker)
	if err := r.loadVolumes(); err != nil {
		return nil, err
	}
	if err := r.markOpen(ctx); err != nil {
		return nil, err
	}
	for i := 0; i < flushWorkers; i++ {
		r.workers.Add(1)
		go r.flushWorker()
	}
	r.workers.Add(1)
	go r.pendingFlusher(r.metaKick)
	r.workers.Add(1)
	go r.indexTidier(r.tidyKick)
	if r.opts.IdleSync >= 0 {
		r.workers.Add(1)
		go r.idleSyncer()
	}
	return r, nil
}

func (r *Repo) loadVolumes() error {
	return r.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pfxVolume)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("load volumes: %w", err)
			}
			var rec volRecord
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("load volume %q: %w", it.Item().Key(), err)
			}
			v, err := r.newVolume(rec)
			if err != nil {
				return err
			}
			st, err := txn.Get(stateKey(v.id))
			if err != nil {
				return fmt.Errorf("load volume %s state: %w", rec.Name, err)
			}
			sb, err := st.ValueCopy(nil)
			if err != nil || len(sb) != 16 {
				return fmt.Errorf("load volume %s state: bad record", rec.Name)
			}
			v.nextIno = binary.BigEndian.Uint64(sb)
			v.inoLimit = v.nextIno
			v.seq.Store(binary.BigEndian.Uint64(sb[8:]))
			switch ch, err := txn.Get(changedKey(v.id)); {
			case err == badger.ErrKeyNotFound:
			case err != nil:
				return fmt.Errorf("load volume %s: %w", rec.Name, err)
			default:
				if b, err := ch.ValueCopy(nil); err == nil && len(b) == 16 {
					v.changed.Store(int64(binary.BigEndian.Uint64(b)))
					v.added.Store(int64(binary.BigEndian.Uint64(b[8:])))
				}
			}
			v.setFresh()
			r.vols[rec.Name] = v
		}
		return nil
	})
}

// volumesByID returns the open volumes, by id.
func (r *Repo) volumesByID() map[volID]*volume {
	r.mu.Lock()
	defer r.mu.Unlock()
	byID := make(map[volID]*volume, len(r.vols))
	for _, v := range r.vols {
		byID[v.id] = v
	}
	return byID
}

func (r *Repo) newVolume(rec volRecord) (*volume, error) {
	v := &volume{r: r, rec: rec, files: map[Ino]*openFile{}, holds: map[Ino]int{}, orphans: map[Ino]bool{}, lost: map[Ino]bool{},
		pend: newPending(r.db, r.metaKick, r.saveRefs)}
	b, err := hex.DecodeString(rec.ID)
	if err != nil || len(b) != len(v.id) {
		return nil, fmt.Errorf("volume %s: bad id %q", rec.Name, rec.ID)
	}
	copy(v.id[:], b)
	return v, nil
}

func encodeState(nextIno, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, nextIno)
	return binary.BigEndian.AppendUint64(b, seq)
}

// Close flushes staging buffers and releases resources.
func (r *Repo) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	vols := make([]*volume, 0, len(r.vols))
	for _, v := range r.vols {
		vols = append(vols, v)
	}
	r.mu.Unlock()
	close(r.done)
	r.workers.Wait()
	ctx := context.Background()
	var first error
	for _, v := range vols {
		if err := v.dropOrphans(); err != nil && first == nil {
			first = err
		}
		if err := v.flushAll(ctx); err != nil && first == nil {
			first = err
		}
		if v.sdisk != nil {
			if err := v.sdisk.flush(ctx); err != nil && first == nil {
				first = err
			}
		}
	}
	if err := r.cs.Flush(ctx); err != nil && first == nil {
		first = fmt.Errorf("close layers: flush store: %w", err)
	}
	if err := r.flushPendingAll(); err != nil && first == nil {
		first = fmt.Errorf("close layers: %w", err)
	}
	r.eachPending(func(p *pending) error { p.close(); return nil })
	err := update(r.db, func(txn *badger.Txn) error {
		for _, v := range vols {
			if first == nil {
				// Everything is flushed: nothing is unsaved.
				if err := txn.Delete(unsavedKey(v.id)); err != nil {
					return err
				}
			}
			c, a := v.changed.Load(), v.added.Load()
			if c != 0 || a != 0 {
				b := binary.BigEndian.AppendUint64(nil, uint64(c))
				if err := txn.Set(changedKey(v.id), binary.BigEndian.AppendUint64(b, uint64(a))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil && first == nil {
		first = fmt.Errorf("close layers: keep staging's first change and added bytes: %w", err)
	}
	if err := r.db.Sync(); err != nil && first == nil {
		first = fmt.Errorf("close layers: sync index: %w", err)
	}
	if first == nil {
		if err := r.markClean(); err != nil {
			first = fmt.Errorf("close layers: %w", err)
		}
	}
	return first
}

// ValidVolumeName reports whether CreateVolume takes name: [A-Za-z0-9._-],
// 1-64 characters, not starting with '.' or '-'.
func ValidVolumeName(name string) bool { return validVolumeName(name) }

func validVolumeName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CreateVolume creates a volume. Names: [A-Za-z0-9._-], 1-64 chars, not
// starting with '.' or '-'. Errors: ErrVolumeExists, ErrInvalid.
func (r *Repo) CreateVolume(ctx context.Context, name string, spec VolumeSpec) (VolumeInfo, error) {
	if !validVolumeName(name) {
		return VolumeInfo{}, fmt.Errorf("create volume %q: bad name: %w", name, ErrInvalid)
	}
	rec := volRecord{Name: name, Type: spec.Type, Created: r.now().UTC()}
	switch spec.Type {
	case TypeFS:
	case TypeBlock:
		bs := spec.BlockSize
		if bs == 0 {
			bs = DefaultBlockSize
		}
		if bs < 4096 || bs > 16<<20 || bs&(bs-1) != 0 {
			return VolumeInfo{}, fmt.Errorf("create volume %q: block size %d not a power of two in 4 KiB..16 MiB: %w", name, bs, ErrInvalid)
		}
		if spec.Size <= 0 || spec.Size%512 != 0 {
			return VolumeInfo{}, fmt.Errorf("create volume %q: size %d not a positive multiple of 512: %w", name, spec.Size, ErrInvalid)
		}
		rec.Size, rec.BlockSize = spec.Size, bs
	default:
		return VolumeInfo{}, fmt.Errorf("create volume %q: type %q: %w", name, spec.Type, ErrInvalid)
	}
	var id volID
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return VolumeInfo{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	rec.ID = hex.EncodeToString(id[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return VolumeInfo{}, fmt.Errorf("create volume %q: repository closed: %w", name, ErrInvalid)
	}
	if _, ok := r.vols[name]; ok {
		return VolumeInfo{}, fmt.Errorf("create volume %q: %w", name, ErrVolumeExists)
	}
	v, err := r.newVolume(rec)
	if err != nil {
		return VolumeInfo{}, err
	}
	v.nextIno = uint64(RootIno) + 1
	v.inoLimit = v.nextIno
	v.seq.Store(1)
	v.setFresh()
	b, err := json.Marshal(rec)
	if err != nil {
		return VolumeInfo{}, err
	}
	err = update(r.db, func(txn *badger.Txn) error {
		if err := txn.Set(volumeKey(name), b); err != nil {
			return err
		}
		if err := txn.Set(stateKey(v.id), encodeState(v.nextIno, 1)); err != nil {
			return err
		}
		if spec.Type == TypeFS {
			now := rec.Created
			root := inode{Attr: Attr{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2,
				Atime: now, Mtime: now, Ctime: now}, Parent: RootIno}
			w := &writer{b: &batch{}, vid: v.id, seq: 1}
			if err := w.put(rkIno(recAttr, uint64(RootIno)), root.encode()); err != nil {
				return err
			}
			return w.b.writeTo(txn)
		}
		return nil
	})
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	r.vols[name] = v
	return v.info(0), nil
}

func (v *volume) info(revisions int) VolumeInfo {
	v.mu.Lock()
	lostFiles, lb := len(v.lost), v.lostBlocks
	v.mu.Unlock()
	info := VolumeInfo{Name: v.rec.Name, Type: v.rec.Type, Size: v.rec.Size, BlockSize: v.rec.BlockSize,
		Created: v.rec.Created, Revisions: revisions, LostFiles: lostFiles, LostBlocks: lb.n, LostAt: lb.at}
	if since, at := v.lostChanges(); !at.IsZero() {
		info.LostChanges, info.LostAt = since, at
	}
	if v.unsaved.marked.Load() {
		info.Unsaved = time.Unix(0, v.unsaved.since.Load()).UTC()
	}
	if c := v.changed.Load(); c != 0 {
		info.Uncommitted = time.Unix(0, c).UTC()
	}
	return info
}

func (r *Repo) volume(name string) (*volume, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.vols[name]
	if !ok || r.closed {
		return nil, fmt.Errorf("volume %q: %w", name, ErrUnknownVolume)
	}
	return v, nil
}

// Volumes lists volumes sorted by name.
func (r *Repo) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	r.mu.Lock()
	names := make([]string, 0, len(r.vols))
	for n := range r.vols {
		names = append(names, n)
	}
	r.mu.Unlock()
	sort.Strings(names)
	out := make([]VolumeInfo, 0, len(names))
	for _, n := range names {
		vi, err := r.Volume(ctx, n)
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, vi)
	}
	return out, nil
}

// Volume describes one volume. Errors: ErrUnknownVolume.
func (r *Repo) Volume(ctx context.Context, name string) (VolumeInfo, error) {
	v, err := r.volume(name)
	if err != nil {
		return VolumeInfo{}, err
	}
	revs, err := v.revisions()
	if err != nil {
		return VolumeInfo{}, err
	}
	return v.info(len(revs)), nil
}

// Staging returns the writable head of an fs volume (one per volume; every
// call returns the same one). Errors: ErrUnknownVolume, ErrWrongType.
func (r *Repo) Staging(ctx context.Context, volume string) (*Staging, error) {
	v, err := r.volume(volume)
	if err != nil {
		return nil, err
	}
	if v.rec.Type != TypeFS {
		return nil, fmt.Errorf("staging of volume %q: %w", volume, ErrWrongType)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.staging == nil {
		v.staging = &Staging{staging{v: v, tree: &Tree{tree{v: v, staging: true}}}}
	}
	return v.staging, nil
}

// StatFS reports capacity for statfs(2). Capacity comes from the store
// when it reports it (Stats), otherwise from the file system holding the
// spool.
func (r *Repo) StatFS(ctx context.Context) (StatFS, error) {
	var out StatFS
	if c, ok := r.cs.(statser); ok {
		st, err := c.Stats(ctx)
		if err != nil {
			return out, fmt.Errorf("statfs: %w", err)
		}
		// Like a filesystem's reserved blocks: free counts the store's
		// reserve, available (what df shows a backup) does not.
		out.TotalBytes, out.FreeBytes, out.AvailBytes = st.Capacity, st.Free, st.Avail
	}
	if out.TotalBytes == 0 {
		// No capacity from the store (a test store, or backends that
		// cannot tell): report the spool's file system.
		var st unix.Statfs_t
		if err := unix.Statfs(r.opts.SpoolDir, &st); err != nil {
			return out, fmt.Errorf("statfs %s: %w", r.opts.SpoolDir, err)
		}
		out.TotalBytes = st.Blocks * uint64(st.Bsize)
		out.FreeBytes = st.Bfree * uint64(st.Bsize)
		out.AvailBytes = st.Bavail * uint64(st.Bsize)
	}
	r.mu.Lock()
	for _, v := range r.vols {
		v.mu.Lock()
		out.Files += v.nextIno - 1
		v.mu.Unlock()
	}
	r.mu.Unlock()
	out.FreeFiles = 1 << 40
	return out, nil
}

// statser is the optional ChunkStore method StatFS uses to report the
// store's real capacity; *store.Store has it.
type statser interface {
	Stats(ctx context.Context) (store.Stats, error)
}

// noteChange records now as the first change to staging since the last
// commit, unless one is recorded (Revision.Duration counts from it).
func (v *volume) noteChange(now time.Time) {
	if v.changed.Load() == 0 {
		v.changed.CompareAndSwap(0, now.UnixNano())
	}
}
