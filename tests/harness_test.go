package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var strataBin string

func TestMain(m *testing.M) {
	if os.Getenv("STRATA_SKIP_E2E") == "1" {
		fmt.Println("STRATA_SKIP_E2E=1: end-to-end tests skipped")
		os.Exit(0)
	}
	strataBin = os.Getenv("STRATA_BIN")
	var tmp string
	if strataBin == "" {
		var err error
		tmp, err = os.MkdirTemp("", "strata-bin")
		if err != nil {
			panic(err)
		}
		strataBin = filepath.Join(tmp, "strata")
		out, err := exec.Command("go", "build", "-o", strataBin, "../cmd/strata").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build strata: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// need fails the test when a tool is missing: the suite installs them
// (contrib/install-deps.sh), so a missing one is a real failure.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (run contrib/install-deps.sh)", tool)
		}
	}
}

// repo is one test repository driven through the binary.
type repo struct {
	t    testing.TB
	dir  string
	work string
	env  []string
}

const testPassphrase = "correct horse battery staple"

// newRepo inits a repository (4+2 unless args say otherwise) in a temp dir
// and stops its server and unmounts everything at cleanup.
func newRepo(t testing.TB, initArgs ...string) *repo {
	t.Helper()
	work := t.TempDir()
	return newRepoAt(t, work, filepath.Join(work, "repo"), initArgs...)
}

// newRepoAt is newRepo with the repository at dir (under a filesystem the
// test made, say) and WORK at work.
func newRepoAt(t testing.TB, work, dir string, initArgs ...string) *repo {
	t.Helper()
	r := &repo{t: t, dir: dir, work: work}
	r.env = append(os.Environ(), "STRATA_REPO="+r.dir, "STRATA_PASSPHRASE="+testPassphrase)
	t.Cleanup(r.cleanup)
	r.must(append([]string{"init"}, initArgs...)...)
	return r
}

func (r *repo) cleanup() {
	r.run("stop")
	// Whatever is still mounted under the work dir (a test that failed
	// half-way, a killed server) is detached so TempDir can be removed.
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], r.work) {
			syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(filepath.Join(r.dir, "strata.sock")); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A server that did not stop (a test failed half-way) must not
	// outlive the test run.
	if b, err := os.ReadFile(filepath.Join(r.dir, "lock")); err == nil {
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 && pid != os.Getpid() {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(cmdline), r.dir) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// result of one strata run.
type result struct {
	stdout, stderr string
	code           int
}

// run runs strata with args and returns what happened.
func (r *repo) run(args ...string) result {
	return r.runEnv(nil, args...)
}

func (r *repo) runEnv(extra []string, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, strataBin, args...)
	cmd.Env = append(append([]string{}, r.env...), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("run strata %v: %v", args, err)
	}
	return res
}

// must runs strata and fails the test unless it exits 0; returns stdout.
func (r *repo) must(args ...string) string {
	r.t.Helper()
	res := r.run(args...)
	if res.code != 0 {
		r.t.Fatalf("strata %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// mountNewVolume creates fs volume name and mounts its staging head at
// WORK/mnt/stage, which it returns.
func (r *repo) mountNewVolume(name string) string {
	r.t.Helper()
	r.must("volume", "create", name)
	stage := r.mkdir("mnt/stage")
	r.must("mount", name, stage)
	return stage
}

// mountRevision mounts revision spec (NAME@REV) read-only at a new
// directory WORK/mnt/rev-<spec>, which it returns.
func (r *repo) mountRevision(spec string) string {
	r.t.Helper()
	mnt := r.mkdir("mnt/rev-" + strings.NewReplacer("@", "-", "/", "-", ":", "-").Replace(spec))
	r.must("mount", spec, mnt)
	return mnt
}

// mkdir makes a directory under the test's work dir.
func (r *repo) mkdir(name string) string {
	r.t.Helper()
	p := filepath.Join(r.work, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// sh runs a command and fails the test unless it succeeds; returns its
// combined output.
func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// itemize compares a source tree with a mount the way users would:
// rsync's dry run with checksums must list nothing.
func itemize(t testing.TB, src, dst string) string {
	t.Helper()
	out, err := exec.Command("rsync", "-naHAXS", "--numeric-ids", "--checksum", "--itemize-changes", "--delete", src+"/", dst+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync compare %s %s: %v\n%s", src, dst, err, out)
	}
	return strings.TrimSpace(string(out))
}

// serveNBD serves NBD on a unix socket in the work dir; it returns the
// socket and the URI of an export on it.
func (r *repo) serveNBD() (sock string, uri func(export string) string) {
	r.t.Helper()
	sock = filepath.Join(r.work, "nbd.sock")
	r.must("nbd", "serve", "--listen", "unix:"+sock)
	return sock, nbdURI(sock)
}

// nbdURI returns the NBD URI of an export served on the unix socket sock.
func nbdURI(sock string) func(export string) string {
	return func(export string) string { return "nbd+unix:///" + export + "?socket=" + sock }
}

// tmpfs mounts a tmpfs of size (as mount's size=, e.g. "200m") on a new
// directory under work; it is unmounted at cleanup.
func tmpfs(t testing.TB, work, size string) string {
	t.Helper()
	dir := filepath.Join(work, "repofs")
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// ext4 mounts a new ext4 filesystem of size bytes (4 KiB blocks) from an
// image in the work dir on WORK/name, for cases that must not depend on
// the filesystem TMPDIR is on; it is unmounted at cleanup.
func (r *repo) ext4(name string, size int64) string {
	r.t.Helper()
	need(r.t, "mkfs.ext4")
	img, dir := filepath.Join(r.work, name+".img"), r.mkdir(name)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		r.t.Fatal(err)
	}
	sh(r.t, "mkfs.ext4", "-q", "-F", "-b", "4096", img)
	sh(r.t, "mount", "-o", "loop", img, dir)
	r.t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}
