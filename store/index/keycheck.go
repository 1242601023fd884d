package index

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// ErrNoIndex means the index directory holds no key registry: the index
// was never opened (a new repository) or is lost, so there is nothing to
// check a key against.
var ErrNoIndex = errors.New("no index to check the key against")

// CheckKey tells whether key is the one the index in dir is encrypted
// with: nil if it is, ErrWrongKey if not, ErrNoIndex if there is no index.
// It reads only badger's key registry file (a sanity text encrypted with
// the key) and takes no lock, so it works while a server holds the index;
// badger replaces that file by rename, so it is never read half-written.
func CheckKey(dir string, key []byte) error {
	if _, err := os.Stat(filepath.Join(dir, badger.KeyRegistryFileName)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check index key in %s: %w", dir, ErrNoIndex)
	} else if err != nil {
		return fmt.Errorf("check index key: %w", err)
	}
	_, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: dir, ReadOnly: true, EncryptionKey: key})
	switch {
	case err == nil:
		return nil
	case isKeyMismatch(err):
		return fmt.Errorf("check index key in %s: %w", dir, ErrWrongKey)
	}
	return fmt.Errorf("check index key in %s: %w", dir, err)
}
