package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Holder is something that keeps a mount busy.
type Holder struct {
	// PID is the process that holds it (0: the kernel, for a loop device
	// or a mount on top).
	PID int
	// What says what holds it, for a message: "/dev/loop0 (backing
	// file /mnt/stg/disk.img, mounted on /mnt/guest)", "process 123
	// (bash): working directory /mnt/stg".
	What string
}

// Holders finds what keeps the mount at dir busy, as far as /proc and
// /sys tell cheaply: loop devices backed by a file under dir (and where
// they are mounted), mounts under dir, and processes with a file, working
// directory or root under dir. It reads no file on the mount (its server
// may be the caller). Best effort: what it cannot read it skips, and an
// mmap of a closed file or a holder in another mount namespace goes
// unseen.
func Holders(dir string) []Holder {
	dir = filepath.Clean(dir)
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	var out []Holder
	mounts, _ := readMountTable()
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range loops {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		file := strings.TrimSpace(string(b))
		if !under(file) {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(bf)))
		what := dev + " (backing file " + file
		for _, m := range mounts {
			if m.source == dev {
				what += ", mounted on " + m.point
			}
		}
		out = append(out, Holder{What: what + ")"})
	}
	for _, m := range mounts {
		if m.point != dir && under(m.point) {
			out = append(out, Holder{What: "a mount on " + m.point})
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if what := procHolds(pid, under); what != "" {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			out = append(out, Holder{PID: pid, What: fmt.Sprintf("process %d (%s): %s", pid, strings.TrimSpace(string(comm)), what)})
		}
	}
	return out
}

// procHolds says what of process pid lies under the mount ("" if
// nothing): its working directory, root or first open file there.
func procHolds(pid int, under func(string) bool) string {
	base := "/proc/" + strconv.Itoa(pid)
	if p, err := os.Readlink(base + "/cwd"); err == nil && under(p) {
		return "working directory " + p
	}
	if p, err := os.Readlink(base + "/root"); err == nil && under(p) {
		return "root directory " + p
	}
	fds, _ := os.ReadDir(base + "/fd")
	for _, fd := range fds {
		if p, err := os.Readlink(base + "/fd/" + fd.Name()); err == nil && under(p) {
			return "open file " + p
		}
	}
	return ""
}
