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

// AddPassphrase stores m encrypted with pass as a new entry. It refuses
// (*DuplicateError) a passphrase that already opens an entry: two entries
// with one passphrase are two things to change or remove, and a forgotten
// one keeps an old passphrase working.
func (r *Ring) AddPassphrase(m Master, pass []byte, label string) (Entry, error) {
	if len(pass) == 0 {
		return Entry{}, fmt.Errorf("add passphrase entry: empty passphrase: %w", ErrWrongPassphrase)
	}
	msg, err := encryptPassphrase(encodeBody(m, ""), pass, passphraseConfig(r.opts.Argon2, r.opts.Now))
	if err != nil {
		return Entry{}, fmt.Errorf("add passphrase entry: encrypt: %w", err)
	}
	dup := func(entries []Entry) error {
		if _, opened, err := r.findPassphrase(entries, pass, true); err == nil {
			return &DuplicateError{IDs: IDs(opened)}
		}
		return nil
	}
	return r.add(m, Entry{Kind: KindPassphrase, Label: label}, msg, dup)
}

// AddRecipients stores m encrypted to every public key in
// armoredPublicKeys as one new entry; any of them can unlock it. It
// refuses (*DuplicateError) keys that are already recipients of an entry.
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
	dup := func(entries []Entry) error {
		var d DuplicateError
		for _, e := range entries {
			hit := false
			for _, f := range e.Recipients {
				if slices.Contains(fprs, f) {
					hit = true
					if !slices.Contains(d.Fingerprints, f) {
						d.Fingerprints = append(d.Fingerprints, f)
					}
				}
			}
			if hit {
				d.IDs = append(d.IDs, e.ID)
			}
		}
		if len(d.IDs) > 0 {
			return &d
		}
		return nil
	}
	return r.add(m, Entry{Kind: KindRecipients, Label: label, Recipients: fprs}, msg, dup)
}

// add writes a new entry for m after checking that every existing entry
// holds the same master key and that dup finds no entry the new one
// repeats.
func (r *Ring) add(m Master, e Entry, msg []byte, dup func([]Entry) error) (Entry, error) {
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
	if err := dup(existing); err != nil {
		return Entry{}, fmt.Errorf("add %s entry: %w", e.Kind, err)
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

// IDs returns the ids of entries, in their order.
func IDs(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.ID
	}
	return out
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

// Resolve returns the entry whose id is prefix or, failing that, the one
// entry whose id starts with it (as revision ids work). An unknown prefix
// is ErrNotFound, one matching several entries an *AmbiguousError.
func (r *Ring) Resolve(prefix string) (Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.list()
	if err != nil {
		return Entry{}, err
	}
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	var matches []Entry
	for _, e := range entries {
		if e.ID == prefix {
			return e, nil
		}
		if prefix != "" && strings.HasPrefix(e.ID, prefix) {
			matches = append(matches, e)
		}
	}
	switch len(matches) {
	case 0:
		return Entry{}, fmt.Errorf("key entry %q: %w", prefix, ErrNotFound)
	case 1:
		return matches[0], nil
	}
	return Entry{}, &AmbiguousError{Prefix: prefix, Matches: IDs(matches)}
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
	m, opened, err := r.find(c, false)
	if err != nil {
		return Master{}, Entry{}, err
	}
	return m, opened[0], nil
}

// Opening is Unlock that tries every entry and returns all the entries the
// credentials open, oldest first: what a change to "the entry I use" must
// cover. Errors are as for Unlock.
func (r *Ring) Opening(c Credentials) (Master, []Entry, error) {
	return r.find(c, true)
}

func (r *Ring) find(c Credentials, all bool) (Master, []Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.list()
	if err != nil {
		return Master{}, nil, err
	}
	if len(entries) == 0 {
		return Master{}, nil, fmt.Errorf("unlock: %s: %w", r.dir, ErrNoKeys)
	}
	if len(c.Passphrase) == 0 && len(c.Identity) == 0 {
		return Master{}, nil, fmt.Errorf("unlock: %w", ErrNoCredentials)
	}
	var (
		m      Master
		opened []Entry
		errs   []error
	)
	if len(c.Passphrase) > 0 {
		pm, pe, err := r.findPassphrase(entries, c.Passphrase, all)
		if err == nil {
			m, opened = pm, append(opened, pe...)
		} else {
			errs = append(errs, err)
		}
	}
	if len(c.Identity) > 0 && (all || len(opened) == 0) {
		im, ie, err := r.findIdentity(entries, c.Identity, c.IdentityPassphrase, all)
		if err == nil {
			m, opened = im, append(opened, ie...)
		} else if len(opened) == 0 {
			errs = append(errs, err)
		}
	}
	if len(opened) == 0 {
		return Master{}, nil, fmt.Errorf("unlock: %w", errors.Join(errs...))
	}
	// Every entry was checked against its check value, and add keeps
	// all check values equal, so the entries agree on m.
	slices.SortStableFunc(opened, func(a, b Entry) int { return a.Created.Compare(b.Created) })
	return m, opened, nil
}

// findPassphrase opens passphrase entries with pass: the first one, or
// with all every one.
func (r *Ring) findPassphrase(entries []Entry, pass []byte, all bool) (Master, []Entry, error) {
	tried := 0
	var m Master
	var opened []Entry
	for _, e := range entries {
		if e.Kind != KindPassphrase {
			continue
		}
		tried++
		em, err := r.open(e, pass, nil)
		if err == nil {
			m, opened = em, append(opened, e)
			if !all {
				break
			}
			continue
		}
		if errors.Is(err, ErrMasterMismatch) || errors.Is(err, ErrCorrupt) {
			r.opts.Logger.Warn("key entry opened but is damaged", "entry", e.ID, "err", err)
		} else {
			r.opts.Logger.Debug("passphrase does not open key entry", "entry", e.ID, "err", err)
		}
	}
	switch {
	case len(opened) > 0:
		return m, opened, nil
	case tried == 0:
		return Master{}, nil, fmt.Errorf("no passphrase entry to try: %w", ErrWrongPassphrase)
	}
	return Master{}, nil, fmt.Errorf("passphrase opens none of %d passphrase entries: %w", tried, ErrWrongPassphrase)
}

// findIdentity opens recipients entries encrypted to the identity: the
// first one, or with all every one.
func (r *Ring) findIdentity(entries []Entry, armoredKey, pass []byte, all bool) (Master, []Entry, error) {
	keys, err := identity(armoredKey, pass)
	if err != nil {
		return Master{}, nil, err
	}
	mine := map[string]bool{}
	for _, k := range keys {
		mine[fingerprint(k.PrimaryKey.Fingerprint)] = true
	}
	var m Master
	var opened []Entry
	for _, e := range entries {
		if e.Kind != KindRecipients || !slices.ContainsFunc(e.Recipients, func(f string) bool { return mine[f] }) {
			continue
		}
		em, err := r.open(e, nil, keys)
		if err == nil {
			m, opened = em, append(opened, e)
			if !all {
				break
			}
			continue
		}
		r.opts.Logger.Warn("identity is a recipient of key entry but does not open it", "entry", e.ID, "err", err)
	}
	if len(opened) > 0 {
		return m, opened, nil
	}
	var fprs []string
	for f := range mine {
		fprs = append(fprs, f)
	}
	slices.Sort(fprs)
	return Master{}, nil, fmt.Errorf("identity %s: %w", strings.Join(fprs, ","), ErrNoMatchingKey)
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

// ChangePassphrase rewraps every passphrase entry that c.Passphrase opens
// with newPass and returns them: changing only one would leave the old
// passphrase working through the others. Only their message files change;
// no data is re-encrypted. A newPass that already opens an entry is
// refused (*DuplicateError), as AddPassphrase does.
func (r *Ring) ChangePassphrase(c Credentials, newPass []byte) ([]Entry, error) {
	if len(newPass) == 0 {
		return nil, fmt.Errorf("change passphrase: empty new passphrase: %w", ErrWrongPassphrase)
	}
	if len(c.Passphrase) == 0 {
		return nil, fmt.Errorf("change passphrase: the current passphrase is needed: %w", ErrNoCredentials)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.list()
	if err != nil {
		return nil, err
	}
	m, opened, err := r.findPassphrase(entries, c.Passphrase, true)
	if err != nil {
		return nil, fmt.Errorf("change passphrase: %w", err)
	}
	if bytes.Equal(newPass, c.Passphrase) {
		return nil, fmt.Errorf("change passphrase: the new passphrase is the current one: %w", &DuplicateError{IDs: IDs(opened)})
	}
	others := slices.DeleteFunc(slices.Clone(entries), func(e Entry) bool { return slices.ContainsFunc(opened, func(o Entry) bool { return o.ID == e.ID }) })
	if _, dup, err := r.findPassphrase(others, newPass, true); err == nil {
		return nil, fmt.Errorf("change passphrase: %w", &DuplicateError{IDs: IDs(dup)})
	}
	// Encrypt all first so an Argon2 or encryption failure changes
	// nothing; a failed write part-way leaves each entry opening with
	// the old or the new passphrase, never neither.
	msgs := make([][]byte, len(opened))
	for i, e := range opened {
		if msgs[i], err = encryptPassphrase(encodeBody(m, ""), newPass, passphraseConfig(r.opts.Argon2, r.opts.Now)); err != nil {
			return nil, fmt.Errorf("change passphrase of entry %s: encrypt: %w", e.ID, err)
		}
	}
	for i, e := range opened {
		if err := writeFileAtomic(r.dir, e.ID+".asc", msgs[i]); err != nil {
			return opened[:i], fmt.Errorf("change passphrase of entry %s (%d of %d done): %w", e.ID, i, len(opened), err)
		}
	}
	return opened, nil
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
