package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockRepo takes REPO/lock with flock and writes our PID into it. The lock
// dies with the process, so a crash never leaves a stale lock; the PID is
// only there to name the holder.
func lockRepo(dir string) (*os.File, error) {
	p := filepath.Join(dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &LockedError{PID: LockHolder(dir)}
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write lock %s: %w", p, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write lock %s: %w", p, err)
	}
	return f, nil
}

// LockHolder is the PID of the process holding repository dir, 0 if none
// is recorded.
func LockHolder(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "lock"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// unlockRepo clears the PID and releases the lock.
func unlockRepo(f *os.File) error {
	f.Truncate(0)
	return f.Close()
}
