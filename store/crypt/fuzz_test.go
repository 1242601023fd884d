package crypt

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open: it must never panic and never
// return data without an error, since only Seal under the key can make an
// authentic chunk.
func FuzzOpen(f *testing.F) {
	k := NewKeys([32]byte{1})
	text := textData(1, 2000)
	f.Add(k.Seal(nil, text, k.ID(text)))
	f.Add(k.Seal(nil, randomData(1, 100), k.ID(randomData(1, 100))))
	f.Add([]byte{0x11})
	f.Add(make([]byte, Overhead))
	f.Fuzz(func(t *testing.T, sealed []byte) {
		out, err := k.Open(nil, sealed, k.ID(text))
		if err == nil && !bytes.Equal(out, text) {
			t.Fatalf("Open accepted forged input (%d bytes)", len(sealed))
		}
		if err != nil && !errors.Is(err, ErrAuth) {
			t.Fatalf("error %v does not match ErrAuth", err)
		}
	})
}

func TestMaxSealedLen(t *testing.T) {
	k := NewKeys([32]byte{2})
	for _, n := range []int{0, 1, 1000, 1 << 20} {
		for _, data := range [][]byte{randomData(int64(n), n), textData(int64(n), n)} {
			if got := len(k.Seal(nil, data, k.ID(data))); got > MaxSealedLen(n) {
				t.Errorf("Seal of %d bytes gave %d, above MaxSealedLen %d", n, got, MaxSealedLen(n))
			}
		}
	}
}
