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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	return Check(dir)
}

// Check refuses an unsafe existing directory without creating anything.
func Check(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return &UnsafeError{dir, "is a symbolic link; remove it, dmlaunch creates the directory itself"}
	}
	if !fi.IsDir() {
		return &UnsafeError{dir, "is not a directory"}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &UnsafeError{dir, "cannot read its owner"}
	}
	if int(st.Uid) != os.Geteuid() {
		return &UnsafeError{dir, fmt.Sprintf("is owned by uid %d, not by uid %d that runs dmlaunch; chown it or remove it", st.Uid, os.Geteuid())}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &UnsafeError{dir, fmt.Sprintf("has mode %04o, writable by others; chmod 0700 it", fi.Mode().Perm())}
	}
	return nil
}
