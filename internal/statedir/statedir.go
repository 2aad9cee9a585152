// Package statedir makes and checks the directory that holds leases,
// registry records and sockets. Everything in it steers which QEMU runs
// with which domid, so it must be ours alone.
package statedir

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal of a state directory.
var ErrUnsafe = errors.New("unsafe state directory")

// UnsafeError says what is wrong with a state directory.
type UnsafeError struct {
	Dir    string
	Reason string
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("state directory %s: %s", e.Dir, e.Reason)
}

func (e *UnsafeError) Unwrap() error { return ErrUnsafe }

// Ensure creates dir (mode 0700) if it is missing, and refuses one that is
// a symlink, not a directory, owned by another user, or writable by group
// or others.
func Ensure(dir string) error {
	err := Check(dir)
	if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	return Check(dir)
}

// Check refuses an unsafe existing directory without creating anything.
// It uses a plain lstat(2): every launch checks the directory.
func Check(dir string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
	case syscall.S_IFLNK:
		return &UnsafeError{dir, "is a symbolic link; remove it, dmlaunch creates the directory itself"}
	default:
		return &UnsafeError{dir, "is not a directory"}
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return &UnsafeError{dir, fmt.Sprintf("is owned by uid %d, not by uid %d that runs dmlaunch; chown it or remove it", st.Uid, euid)}
	}
	if perm := st.Mode & 0o777; perm&0o022 != 0 {
		return &UnsafeError{dir, fmt.Sprintf("has mode %04o, writable by others; chmod 0700 it", perm)}
	}
	return nil
}
