package crypt

import (
	"bytes"
	"errors"
	"math/rand"
	"sync"
	"testing"

	"github.com/strata-backup/strata/store/chunk"
)

func testKeys(t testing.TB, seed byte) *Keys {
	t.Helper()
	var m [32]byte
	for i := range m {
		m[i] = seed + byte(i)
	}
	return NewKeys(m)
}

func randomData(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// textData is seeded pseudo-text: words from a small vocabulary, which
// compresses much like prose or source code.
func textData(seed int64, n int) []byte {
	words := []string{"the", "chunk", "segment", "shard", "revision", "staging", "func", "return", "err", "nil",
		"backup", "layer", "volume", "index", "if", "for", "range", "package", "import", "strata"}
	r := rand.New(rand.NewSource(seed))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.Intn(len(words))])
		if r.Intn(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func TestRoundTrip(t *testing.T) {
	k := testKeys(t, 1)
	cases := []struct {
		name       string
		data       []byte
		compressed bool
	}{
		{"empty", nil, false},
		{"one byte", []byte{7}, false},
		{"zeros 64KiB", make([]byte, 64<<10), true},
		{"text 1MiB", textData(1, 1<<20), true},
		{"random 1MiB", randomData(2, 1<<20), false},
		{"random 4KiB+3", randomData(3, 4099), false},
		{"text 8MiB", textData(4, 8<<20), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := k.ID(c.data)
			prefix := []byte("prefix")
			sealed := k.Seal(append([]byte(nil), prefix...), c.data, id)
			if !bytes.Equal(sealed[:len(prefix)], prefix) {
				t.Fatalf("Seal clobbered dst prefix")
			}
			sealed = sealed[len(prefix):]
			if got := sealed[0]&0xf == codecS2; got != c.compressed {
				t.Errorf("compressed = %v, want %v (sealed %d bytes of %d)", got, c.compressed, len(sealed), len(c.data))
			}
			if !c.compressed && len(sealed) != len(c.data)+Overhead {
				t.Errorf("sealed %d bytes to %d, want %d", len(c.data), len(sealed), len(c.data)+Overhead)
			}
			out, err := k.Open([]byte("x"), sealed, id)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if out[0] != 'x' || !bytes.Equal(out[1:], c.data) {
				t.Fatalf("Open returned %d bytes, want %d equal to the input", len(out)-1, len(c.data))
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	k := testKeys(t, 1)
	data := textData(5, 10000)
	id := k.ID(data)
	a, b := k.Seal(nil, data, id), k.Seal(nil, data, id)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same data are identical: nonce not random")
	}
}

func TestTamperEveryRegion(t *testing.T) {
	k := testKeys(t, 1)
	for _, name := range []string{"text", "random"} {
		data := textData(6, 3000)
		if name == "random" {
			data = randomData(6, 3000)
		}
		id := k.ID(data)
		sealed := k.Seal(nil, data, id)
		regions := map[string][2]int{
			"header":     {0, 1},
			"nonce":      {1, headerSize},
			"ciphertext": {headerSize, len(sealed) - tagSize},
			"tag":        {len(sealed) - tagSize, len(sealed)},
		}
		for region, r := range regions {
			for pos := r[0]; pos < r[1]; pos++ {
				for bit := range 8 {
					if region == "ciphertext" && bit != pos%8 { // keep it fast: one bit per ciphertext byte
						continue
					}
					bad := bytes.Clone(sealed)
					bad[pos] ^= 1 << bit
					out, err := k.Open(nil, bad, id)
					if !errors.Is(err, ErrAuth) {
						t.Fatalf("%s/%s: flip byte %d bit %d: err = %v, want ErrAuth", name, region, pos, bit, err)
					}
					if len(out) != 0 {
						t.Fatalf("%s/%s: flip byte %d bit %d returned %d bytes", name, region, pos, bit, len(out))
					}
				}
			}
		}
		for _, n := range []int{0, 1, headerSize, Overhead - 1, len(sealed) - 1} {
			if _, err := k.Open(nil, sealed[:n], id); !errors.Is(err, ErrAuth) {
				t.Errorf("%s: truncated to %d: err = %v, want ErrAuth", name, n, err)
			}
		}
		if _, err := k.Open(nil, append(bytes.Clone(sealed), 0), id); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: extended by one byte: err = %v, want ErrAuth", name, err)
		}
	}
}

func TestWrongIDAndWrongKey(t *testing.T) {
	k := testKeys(t, 1)
	data := textData(7, 5000)
	id := k.ID(data)
	sealed := k.Seal(nil, data, id)
	other := id
	other[31] ^= 1
	if _, err := k.Open(nil, sealed, other); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong id: err = %v, want ErrAuth", err)
	}
	if _, err := k.Open(nil, sealed, chunk.ID{}); !errors.Is(err, ErrAuth) {
		t.Errorf("zero id: err = %v, want ErrAuth", err)
	}
	if _, err := testKeys(t, 2).Open(nil, sealed, id); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: err = %v, want ErrAuth", err)
	}
}

func TestIncompressibleNotExpanded(t *testing.T) {
	k := testKeys(t, 1)
	for _, n := range []int{100, 64 << 10, 1 << 20} {
		data := randomData(int64(n), n)
		sealed := k.Seal(nil, data, k.ID(data))
		if len(sealed) > n+Overhead {
			t.Errorf("%d random bytes sealed to %d, more than %d overhead", n, len(sealed), Overhead)
		}
	}
}

func TestKeysDerivation(t *testing.T) {
	a, a2, b := testKeys(t, 1), testKeys(t, 1), testKeys(t, 2)
	data := []byte("hello")
	if a.ID(data) != a2.ID(data) {
		t.Error("ID not deterministic for the same master key")
	}
	if a.ID(data) == b.ID(data) {
		t.Error("ID equal under different master keys")
	}
	if a.ID(data) == a.ID([]byte("hellp")) {
		t.Error("ID equal for different data")
	}
	if !bytes.Equal(a.IndexKey(), a2.IndexKey()) || bytes.Equal(a.IndexKey(), b.IndexKey()) || len(a.IndexKey()) != 32 {
		t.Error("IndexKey not a deterministic per-master 32-byte key")
	}
	id := a.ID(data)
	if bytes.Equal(a.IndexKey(), id[:]) {
		t.Error("IndexKey equals an id: subkeys not independent")
	}
	if !bytes.Equal(a.MAC("p", data), a2.MAC("p", data)) || bytes.Equal(a.MAC("p", data), a.MAC("q", data)) ||
		bytes.Equal(a.MAC("p", data), b.MAC("p", data)) || bytes.Equal(a.MAC("ab", []byte("c")), a.MAC("a", []byte("bc"))) {
		t.Error("MAC does not separate purposes, keys or boundaries")
	}
}

func TestConcurrentUse(t *testing.T) {
	k := testKeys(t, 1)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sealed, out []byte
			for i := range 20 {
				data := textData(int64(g*100+i), 20000+i)
				if i%2 == 1 {
					data = randomData(int64(g*100+i), 20000+i)
				}
				id := k.ID(data)
				sealed = k.Seal(sealed[:0], data, id)
				var err error
				out, err = k.Open(out[:0], sealed, id)
				if err != nil || !bytes.Equal(out, data) {
					t.Errorf("goroutine %d round %d: err %v, equal %v", g, i, err, bytes.Equal(out, data))
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are random under the race detector (sync.Pool drops items); checked without -race")
	}
	k := testKeys(t, 1)
	data := textData(8, 256<<10)
	id := k.ID(data)
	dst := k.Seal(nil, data, id)
	out, _ := k.Open(nil, dst, id)
	seal := testing.AllocsPerRun(20, func() { dst = k.Seal(dst[:0], data, id) })
	open := testing.AllocsPerRun(20, func() { out, _ = k.Open(out[:0], dst, id) })
	if seal > 1 || open > 1 {
		t.Errorf("allocations per call: Seal %.1f, Open %.1f; want at most 1 with reused buffers", seal, open)
	}
}
