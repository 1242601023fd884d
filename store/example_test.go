package store_test

import (
	"context"
	"fmt"
	"os"

	"github.com/strata-backup/strata/store"
	"github.com/strata-backup/strata/store/chunk"
	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "strata-example-")
	defer os.RemoveAll(dir)

	// A 4+2 repository with the default segment size.
	if err := store.Create(ctx, dir, format.Config{}); err != nil {
		panic(err)
	}
	cfg, _ := format.Load(dir)
	var master [32]byte // from store/key in real use
	s, err := store.Open(ctx, dir, cfg, crypt.NewKeys(master), store.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	id, added, _ := s.Put(ctx, chunk.KindData, []byte("hello, strata"))
	_, again, _ := s.Put(ctx, chunk.KindData, []byte("hello, strata"))
	if err := s.Flush(ctx); err != nil { // durable from here on
		panic(err)
	}
	data, _ := s.Get(ctx, id)
	fmt.Println(added, again, string(data))
	// Output: true false hello, strata
}
