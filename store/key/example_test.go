package key_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-backup/strata/store/key"
)

func Example() {
	dir, _ := os.MkdirTemp("", "keys")
	defer os.RemoveAll(dir)
	// Cheap Argon2 keeps the example fast; OpenRing uses the real cost.
	ring, _ := key.OpenRingOptions(filepath.Join(dir, "keys"), key.Options{Argon2: key.Argon2{Passes: 1, Parallelism: 1, MemoryKiB: 64}})

	m, _ := key.NewMaster()
	if _, err := ring.AddPassphrase(m, []byte("correct horse"), "admin"); err != nil {
		panic(err)
	}
	got, entry, err := ring.Unlock(key.Credentials{Passphrase: []byte("correct horse")})
	fmt.Println(got == m, entry.Kind, entry.Label, err)
	// Output: true passphrase admin <nil>
}
