package chunker_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"

	"github.com/strata-backup/strata/store/chunker"
)

func Example() {
	data := make([]byte, 5<<20)
	rand.New(rand.NewSource(1)).Read(data)

	c := chunker.New(bytes.NewReader(data), chunker.Params{}) // defaults: 512 KiB / 1 MiB / 8 MiB
	var buf []byte
	total := 0
	for {
		var err error
		buf, err = c.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		total += len(buf) // store buf here; it is reused by the next call
	}
	fmt.Println(total == len(data))
	// Output: true
}
