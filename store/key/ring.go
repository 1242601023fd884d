package key

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Entry kinds.
const (
	KindPassphrase = "passphrase"
	KindRecipients = "recipients"
)

// Entry describes one wrapped copy of the master key. It holds no secret.
type Entry struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"` // KindPassphrase or KindRecipients
	Label      string    `json:"label,omitempty"`
	Recipients []string  `json:"recipients,omitempty"` // primary key fingerprints, upper-case hex
	Created    time.Time `json:"created"`
	// Check is the master key's check value (see package doc).
	Check string `json:"check"`
}

// Credentials unlock the ring: a passphrase for passphrase entries and/or
// an armored OpenPGP secret key (with its own passphrase if protected) for
// recipients entries.
type Credentials struct {
	Passphrase         []byte
	Identity           []byte // armored (or binary) OpenPGP secret key
	IdentityPassphrase []byte
}

// Options tune a Ring. The zero value is the production setting.
type Options struct {
	// Argon2 sets the S2K cost of new passphrase entries; zero fields take
	// the defaults. Tests use cheap values.
	Argon2 Argon2
	// Now gives the time for Created and for OpenPGP key validity; nil is
	// time.Now.
	Now func() time.Time
	// Logger receives debug messages about entries that did not open; nil
	// discards.
	Logger *slog.Logger
}

// Ring is the set of key entries in one keys directory.
type Ring struct {
	dir  string
	opts Options
	mu   sync.Mutex // serializes changes to the files in dir
}

// OpenRing opens the keys directory dir, creating it (mode 0700) if it is
// missing.
func OpenRing(dir string) (*Ring, error) { return OpenRingOptions(dir, Options{}) }

// OpenRingOptions is OpenRing with options.
func OpenRingOptions(dir string, opts Options) (*Ring, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open key ring: %w", err)
	}
	return &Ring{dir: dir, opts: opts}, nil
}

// AddPassphrase stores m encrypted with pass as a new entry.
func (r *Ring) AddPassphrase(m Master, pass []byte, label string) (Entry, error) {
	if len(pass) == 0 {
		return Entry{}, fmt.Errorf("add passphrase entry: empty passphrase: %w", ErrWrongPassphrase)
	}
	msg, err := encryptPassphrase(encodeBody(m, ""), pass, passphraseConfig(r.opts.Argon2, r.opts.Now))
	if err != nil {
		return Entry{}, fmt.Errorf("add passphrase entry: encrypt: %w", err)
	}
	return r.add(m, Entry{Kind: KindPassphrase, Label: label}, msg)
}

// AddRecipients stores m encrypted to every public key in
// armoredPublicKeys as one new entry; any of them can unlock it.
func (r *Ring) AddRecipients(m Master, armoredPublicKeys io.Reader, label string) (Entry, error) {
	now := r.opts.Now()
	to, fprs, err := readRecipients(armoredPublicKeys, now)
	if err != nil {
		return Entry{}, fmt.Errorf("add recipients entry: %w", err)
	}
	cfg := gpg22Config(r.opts.Now)
	msg, err := encryptTo(encodeBody(m, ""), to, cfg)
	if err != nil {
		return Entry{}, fmt.Errorf("add recipients entry: encrypt: %w", err)
	}
	return r.add(m, Entry{Kind: KindRecipients, Label: label, Recipients: fprs}, msg)
}

func (r *Ring) add(m Master, e Entry, msg []byte) (Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	existing, err := r.list()
	if err != nil {
		return Entry{}, err
	}
	e.Check = m.check()
	for _, x := range existing {
		if x.Check != e.Check {
			return Entry{}, fmt.Errorf("add %s entry: entry %s holds another key: %w", e.Kind, x.ID, ErrMasterMismatch)
		}
	}
	var id [8]byte
	rand.Read(id[:])
	e.ID = hex.EncodeToString(id[:])
	e.Created = r.opts.Now().UTC().Truncate(time.Second)
	meta, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("add %s entry: %w", e.Kind, err)
	}
	// The message first, the metadata last: the .json file makes the
	// entry exist.
	if err := writeFileAtomic(r.dir, e.ID+".asc", msg); err != nil {
		return Entry{}, fmt.Errorf("add %s entry: %w", e.Kind, err)
	}
	if err := writeFileAtomic(r.dir, e.ID+".json", append(meta, '\n')); err != nil {
		os.Remove(filepath.Join(r.dir, e.ID+".asc"))
		return Entry{}, fmt.Errorf("add %s entry: %w", e.Kind, err)
	}
	return e, nil
}

// List returns the entries, oldest first.
func (r *Ring) List() ([]Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list()
}

func (r *Ring) list() ([]Entry, error) {
	names, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("list key entries: %w", err)
	}
	var out []Entry
	for _, d := range names {
		id, ok := strings.CutSuffix(d.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		e, err := r.entry(id)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (r *Ring) entry(id string) (Entry, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("key entry %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read key entry %s: %w", id, err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("read key entry %s: %v: %w", id, err, ErrCorrupt)
	}
	if e.ID != id || (e.Kind != KindPassphrase && e.Kind != KindRecipients) {
		return Entry{}, fmt.Errorf("read key entry %s: id %q kind %q do not fit: %w", id, e.ID, e.Kind, ErrCorrupt)
	}
	return e, nil
}

func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// Remove deletes entry id. It refuses to remove the last entry.
func (r *Ring) Remove(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !validID(id) {
		return fmt.Errorf("remove key entry %q: %w", id, ErrNotFound)
	}
	entries, err := r.list()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(entries, func(e Entry) bool { return e.ID == id }) {
		return fmt.Errorf("remove key entry %s: %w", id, ErrNotFound)
	}
	if len(entries) == 1 {
		return fmt.Errorf("remove key entry %s: %w", id, ErrLastKey)
	}
	if err := os.Remove(filepath.Join(r.dir, id+".json")); err != nil {
		return fmt.Errorf("remove key entry %s: %w", id, err)
	}
	if err := os.Remove(filepath.Join(r.dir, id+".asc")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.opts.Logger.Warn("remove key message", "entry", id, "err", err)
	}
	return syncDir(r.dir)
}

// Unlock returns the master key from the first entry the credentials
// open: the passphrase is tried on passphrase entries, the identity on
// recipients entries encrypted to it.
func (r *Ring) Unlock(c Credentials) (Master, Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.list()
	if err != nil {
		return Master{}, Entry{}, err
	}
	if len(entries) == 0 {
		return Master{}, Entry{}, fmt.Errorf("unlock: %s: %w", r.dir, ErrNoKeys)
	}
	if len(c.Passphrase) == 0 && len(c.Identity) == 0 {
		return Master{}, Entry{}, fmt.Errorf("unlock: %w", ErrNoCredentials)
	}
	var errs []error
	if len(c.Passphrase) > 0 {
		m, e, err := r.unlockPassphrase(entries, c.Passphrase)
		if err == nil {
			return m, e, nil
		}
		errs = append(errs, err)
	}
	if len(c.Identity) > 0 {
		m, e, err := r.unlockIdentity(entries, c.Identity, c.IdentityPassphrase)
		if err == nil {
			return m, e, nil
		}
		errs = append(errs, err)
	}
	return Master{}, Entry{}, fmt.Errorf("unlock: %w", errors.Join(errs...))
}

func (r *Ring) unlockPassphrase(entries []Entry, pass []byte) (Master, Entry, error) {
	tried := 0
	for _, e := range entries {
		if e.Kind != KindPassphrase {
			continue
		}
		tried++
		m, err := r.open(e, pass, nil)
		if err == nil {
			return m, e, nil
		}
		if errors.Is(err, ErrMasterMismatch) || errors.Is(err, ErrCorrupt) {
			r.opts.Logger.Warn("key entry opened but is damaged", "entry", e.ID, "err", err)
		} else {
			r.opts.Logger.Debug("passphrase does not open key entry", "entry", e.ID, "err", err)
		}
	}
	if tried == 0 {
		return Master{}, Entry{}, fmt.Errorf("no passphrase entry to try: %w", ErrWrongPassphrase)
	}
	return Master{}, Entry{}, fmt.Errorf("passphrase opens none of %d passphrase entries: %w", tried, ErrWrongPassphrase)
}

func (r *Ring) unlockIdentity(entries []Entry, armoredKey, pass []byte) (Master, Entry, error) {
	keys, err := identity(armoredKey, pass)
	if err != nil {
		return Master{}, Entry{}, err
	}
	mine := map[string]bool{}
	for _, k := range keys {
		mine[fingerprint(k.PrimaryKey.Fingerprint)] = true
	}
	for _, e := range entries {
		if e.Kind != KindRecipients || !slices.ContainsFunc(e.Recipients, func(f string) bool { return mine[f] }) {
			continue
		}
		m, err := r.open(e, nil, keys)
		if err == nil {
			return m, e, nil
		}
		r.opts.Logger.Warn("identity is a recipient of key entry but does not open it", "entry", e.ID, "err", err)
	}
	var fprs []string
	for f := range mine {
		fprs = append(fprs, f)
	}
	slices.Sort(fprs)
	return Master{}, Entry{}, fmt.Errorf("identity %s: %w", strings.Join(fprs, ","), ErrNoMatchingKey)
}

// open decrypts entry e and checks the key against its check value.
func (r *Ring) open(e Entry, pass []byte, keyring openpgp.EntityList) (Master, error) {
	msg, err := os.ReadFile(filepath.Join(r.dir, e.ID+".asc"))
	if err != nil {
		return Master{}, fmt.Errorf("read key entry %s: %w", e.ID, err)
	}
	var kr openpgp.KeyRing
	if keyring != nil {
		kr = keyring
	}
	body, err := decrypt(msg, pass, kr, readConfig(r.opts.Now))
	if err != nil {
		return Master{}, fmt.Errorf("open key entry %s: %w", e.ID, err)
	}
	m, _, err := parseBody(body)
	if err != nil {
		return Master{}, fmt.Errorf("open key entry %s: %w", e.ID, err)
	}
	if m.check() != e.Check {
		return Master{}, fmt.Errorf("open key entry %s: %w", e.ID, ErrMasterMismatch)
	}
	return m, nil
}

// ChangePassphrase rewraps the passphrase entry that c.Passphrase opens
// with newPass. Only that entry's message file changes; no data is
// re-encrypted.
func (r *Ring) ChangePassphrase(c Credentials, newPass []byte) error {
	if len(newPass) == 0 {
		return fmt.Errorf("change passphrase: empty new passphrase: %w", ErrWrongPassphrase)
	}
	if len(c.Passphrase) == 0 {
		return fmt.Errorf("change passphrase: the current passphrase is needed: %w", ErrNoCredentials)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.list()
	if err != nil {
		return err
	}
	m, e, err := r.unlockPassphrase(entries, c.Passphrase)
	if err != nil {
		return fmt.Errorf("change passphrase: %w", err)
	}
	msg, err := encryptPassphrase(encodeBody(m, ""), newPass, passphraseConfig(r.opts.Argon2, r.opts.Now))
	if err != nil {
		return fmt.Errorf("change passphrase of entry %s: encrypt: %w", e.ID, err)
	}
	if err := writeFileAtomic(r.dir, e.ID+".asc", msg); err != nil {
		return fmt.Errorf("change passphrase of entry %s: %w", e.ID, err)
	}
	return nil
}

// writeFileAtomic replaces dir/name with data: a reader sees the old or
// the new content, and after a crash one of them survives.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = io.Copy(f, bytes.NewReader(data))
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
