package store

import (
	"path/filepath"

	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/index"
)

// CheckKey tells whether keys belong to the repository in dir by checking
// them against its index: nil if they do, index.ErrWrongKey if not,
// index.ErrNoIndex if there is no index to check against (a repository
// never opened since init, or a lost index). It takes no lock and works
// while a server runs.
func CheckKey(dir string, keys *crypt.Keys) error {
	return index.CheckKey(filepath.Join(dir, "index"), keys.IndexKey())
}
