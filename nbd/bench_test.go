package nbd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-backup/strata/nbd"
	"github.com/strata-backup/strata/nbd/nbdtest"
)

// BenchmarkNBD compares this server with `qemu-nbd -f raw` serving a plain
// file, both over unix sockets, with real clients:
//
//	copy-in:  nbdcopy of a mixed image (1 MiB runs, about 1/3 random data,
//	          the rest zeros) from a local sparse file into the export
//	copy-out: nbdcopy of the export to null: (read-only exports)
//	randread: fio --ioengine=nbd, random 4 KiB reads at queue depth 32,
//	          targets taking turns (3 rounds of 3 s), median IOPS each
//
// Backends: "mem" (nbdtest.Mem), "file" (nbdtest.File on a sparse file,
// like qemu-nbd's). Sizes: STRATA_NBD_BENCH_SIZE bytes (default 1 GiB).
//
//	go test ./nbd -run '^$' -bench NBD -benchtime 1x
func BenchmarkNBD(b *testing.B) {
	needTools(b, "nbdcopy", "qemu-nbd")
	size := int64(1 << 30)
	if s := os.Getenv("STRATA_NBD_BENCH_SIZE"); s != "" {
		var err error
		if size, err = strconv.ParseInt(s, 10, 64); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "src.img")
	makeBenchImage(b, src, size)

	type target struct {
		name  string
		start func(b *testing.B, readOnly bool) (uri string, stop func())
		cpu   func() time.Duration // CPU time the server used so far
	}
	strata := func(backend string) func(b *testing.B, readOnly bool) (string, func()) {
		return func(b *testing.B, readOnly bool) (string, func()) {
			var e nbd.Export
			var release func()
			switch backend {
			case "mem":
				m := nbdtest.NewMem(size, nbdtest.MemOptions{ReadOnly: readOnly})
				if readOnly {
					fillMem(b, m, src)
				}
				e, release = m, func() {}
			case "file":
				path := filepath.Join(dir, "strata.img")
				prepareTarget(b, path, src, size, readOnly)
				f, err := nbdtest.OpenFile(path, readOnly)
				if err != nil {
					b.Fatal(err)
				}
				e, release = f, func() { f.Release(); os.Remove(path) }
			}
			ts := startServer(b, nbdtest.NewResolver(map[string]nbd.Export{"d": e}), nbd.Options{Logger: discard()})
			return ts.unixURI("d"), func() { ts.srv.Close(); release() }
		}
	}
	var qemuPID int
	qemu := func(b *testing.B, readOnly bool) (string, func()) {
		path := filepath.Join(dir, "qemu.img")
		prepareTarget(b, path, src, size, readOnly)
		sock := filepath.Join(dir, "qemu.sock")
		args := []string{"-f", "raw", "-k", sock, "-t", "-e", "16", "--cache=writeback", "--aio=threads"}
		if readOnly {
			args = append(args, "-r")
		}
		cmd := exec.Command("qemu-nbd", append(args, path)...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		qemuPID = cmd.Process.Pid
		for i := 0; ; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if i > 500 {
				b.Fatal("qemu-nbd did not create its socket")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return "nbd+unix:///?socket=" + sock, func() {
			cmd.Process.Kill()
			cmd.Wait()
			os.Remove(path)
			os.Remove(sock)
		}
	}
	targets := []target{{"strata-mem", strata("mem"), selfCPU}, {"strata-file", strata("file"), selfCPU},
		{"qemu-nbd", qemu, func() time.Duration { return procCPU(b, qemuPID) }}}

	for _, tg := range targets {
		b.Run("copy-in/"+tg.name, func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				b.StopTimer()
				uri, stop := tg.start(b, false)
				b.StartTimer()
				run(b, "nbdcopy", src, uri)
				b.StopTimer()
				stop()
				b.StartTimer()
			}
		})
	}
	for _, tg := range targets {
		b.Run("copy-out/"+tg.name, func(b *testing.B) {
			b.StopTimer()
			uri, stop := tg.start(b, true)
			defer stop()
			b.SetBytes(size)
			b.StartTimer()
			for range b.N {
				run(b, "nbdcopy", uri, "null:")
			}
		})
	}
	if _, err := exec.LookPath("fio"); err != nil {
		b.Logf("fio not installed: no random read benchmark")
		return
	}
	// The targets take turns in short rounds, so that load from whatever
	// else runs on the machine hits them alike; the median round counts.
	b.Run("randread", func(b *testing.B) {
		b.StopTimer()
		uris := make([]string, len(targets))
		for i, tg := range targets {
			uri, stop := tg.start(b, true)
			defer stop()
			uris[i] = uri
		}
		b.StartTimer()
		const rounds = 3
		iops := make([][]float64, len(targets))
		cpu := make([][]float64, len(targets))
		for range b.N {
			for range rounds {
				for i, tg := range targets {
					before := tg.cpu()
					start := time.Now()
					v, _ := fioRandRead(b, uris[i], 3)
					used := tg.cpu() - before
					iops[i] = append(iops[i], v)
					// Server CPU per request: far steadier than IOPS on
					// a shared machine.
					cpu[i] = append(cpu[i], float64(used.Microseconds())/(v*time.Since(start).Seconds()))
				}
			}
		}
		for i, tg := range targets {
			slices.Sort(iops[i])
			slices.Sort(cpu[i])
			b.ReportMetric(iops[i][len(iops[i])/2], tg.name+"-IOPS")
			b.ReportMetric(cpu[i][len(cpu[i])/2], tg.name+"-cpu-µs/req")
		}
	})
}

// selfCPU is the CPU time of this process, which runs the strata servers
// (fio runs in its own).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time of process pid.
func procCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// makeBenchImage writes a sparse image of 1 MiB runs: about a third random
// data, the rest holes.
func makeBenchImage(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if rng.IntN(3) != 0 {
			continue
		}
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			b.Fatal(err)
		}
	}
}

// prepareTarget makes path a copy of src (read-only targets) or an empty
// sparse file of the same size.
func prepareTarget(b *testing.B, path, src string, size int64, copyData bool) {
	b.Helper()
	os.Remove(path)
	if copyData {
		run(b, "cp", "--sparse=always", src, path)
		return
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

func fillMem(b *testing.B, m *nbdtest.Mem, src string) {
	b.Helper()
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < m.Size(); off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if n == 0 && err != nil {
			b.Fatal(err)
		}
		if err := m.Fill(buf[:n], off); err != nil {
			b.Fatal(err)
		}
	}
}

// fioRandRead runs random 4 KiB reads at queue depth 32 for secs seconds
// and returns IOPS and bytes per second.
func fioRandRead(b *testing.B, uri string, secs int) (iops, bw float64) {
	b.Helper()
	out := run(b, "fio", "--name=randread", "--ioengine=nbd", "--uri="+uri, "--rw=randread", "--bs=4k",
		"--iodepth=32", "--runtime="+strconv.Itoa(secs), "--time_based", "--randseed=12",
		"--output-format=json")
	var res struct {
		Jobs []struct {
			Read struct {
				IOPS float64 `json:"iops"`
				BW   float64 `json:"bw_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[max(0, strings.IndexByte(out, '{')):]), &res); err != nil || len(res.Jobs) == 0 {
		b.Fatalf("fio output: %v\n%s", err, out)
	}
	return res.Jobs[0].Read.IOPS, res.Jobs[0].Read.BW
}
