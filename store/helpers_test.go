package store

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/strata-backup/strata/store/crypt"
	"github.com/strata-backup/strata/store/format"
)

var testMaster = [32]byte{1, 2, 3, 4, 5}

// testRepo creates a repository with small segments so tests cross many
// segment boundaries quickly.
func testRepo(t testing.TB, k, m int) (string, format.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := format.Config{DataShards: k, ParityShards: m, SegmentSize: 1 << 20}
	if err := Create(context.Background(), dir, cfg); err != nil {
		t.Fatal(err)
	}
	cfg, err := format.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func openStore(t testing.TB, dir string, cfg format.Config, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, cfg, crypt.NewKeys(testMaster), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// putRandom stores count chunks of random sizes up to max and returns them.
func putRandom(t testing.TB, s *Store, seed uint64, count, maxSize int) map[[32]byte][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	out := map[[32]byte][]byte{}
	for range count {
		b := randBytes(r, 1+r.IntN(maxSize))
		id, _, err := s.Put(context.Background(), 1, b)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = b
	}
	return out
}

func newKeys() *crypt.Keys { return crypt.NewKeys(testMaster) }

func mustLoad(t testing.TB, dir string) format.Config {
	t.Helper()
	c, err := format.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reopenChecked closes s, opens the repository again, checks that every
// chunk in want reads back and that a full scrub finds it healthy, and
// returns the new store.
func reopenChecked(t *testing.T, s *Store, dir string, cfg format.Config, want map[[32]byte][]byte) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, cfg, Options{})
	checkAll(t, s, want)
	rep, err := s.Scrub(context.Background(), ScrubOptions{ReadData: 100})
	if err != nil || !rep.OK() {
		t.Fatalf("scrub after reopening: %+v, %v", rep, err)
	}
	return s
}

// childTest returns a command that runs this test binary again with only
// the test named test, with env added: for what needs a second process
// (a lock holder, a crash by SIGKILL or by exiting without Close).
func childTest(t testing.TB, test string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}
