package key

import (
	"path/filepath"
	"testing"
)

// BenchmarkUnlockDefaultArgon2 measures one passphrase unlock at the
// production Argon2 cost.
func BenchmarkUnlockDefaultArgon2(b *testing.B) {
	r, err := OpenRing(filepath.Join(b.TempDir(), "keys"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.AddPassphrase(testMaster(1), []byte("alpha"), ""); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := r.Unlock(Credentials{Passphrase: []byte("alpha")}); err != nil {
			b.Fatal(err)
		}
	}
}
