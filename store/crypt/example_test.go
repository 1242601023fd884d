package crypt_test

import (
	"fmt"

	"github.com/strata-backup/strata/store/crypt"
)

func Example() {
	var master [32]byte // from key.Ring.Unlock in real use
	k := crypt.NewKeys(master)

	plain := []byte("some file contents, some file contents, some file contents")
	id := k.ID(plain)
	sealed := k.Seal(nil, plain, id)

	got, err := k.Open(nil, sealed, id)
	fmt.Println(string(got) == string(plain), err)

	sealed[len(sealed)-1] ^= 1
	_, err = k.Open(nil, sealed, id)
	fmt.Println(err != nil)
	// Output:
	// true <nil>
	// true
}
