package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// fusectlDir is where the kernel's fusectl filesystem lists FUSE
// connections.
const fusectlDir = "/sys/fs/fuse/connections"

// AbortConn aborts FUSE connection conn (Mount.Conn): every request
// waiting on it fails with ENOTCONN and the mount is left dead for
// umount(8). It is the way out of a server that died while one of its own
// threads waited on its mount (the staging warmer lists directories
// through it): such a thread waits uninterruptibly for a reply only the
// dead server could send, and the process cannot finish exiting, so the
// kernel never sees /dev/fuse closed. fusectl is mounted if it is not.
func AbortConn(conn uint32) error {
	if conn == 0 {
		return errors.New("abort FUSE connection: unknown connection")
	}
	dir := filepath.Join(fusectlDir, fmt.Sprint(conn))
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// fusectl is not mounted (or the connection is gone already,
		// and the write below says so).
		if err := syscall.Mount("fusectl", fusectlDir, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("abort FUSE connection %d: mount fusectl on %s: %w", conn, fusectlDir, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "abort"), []byte("1"), 0o200); err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}
