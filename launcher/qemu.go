package launcher

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// KnownQEMUPaths are where the real QEMU lives: Debian's Xen-only build
// (package qemu-system-xen) and upstream Xen's install path. Debian's
// /usr/bin/qemu-system-i386 is a shell script and is never a candidate.
var KnownQEMUPaths = strings.Split(knownQEMUPaths, ":")

// knownQEMUPaths can be replaced at link time (-ldflags -X) for packages
// that install QEMU elsewhere, and by tests that need a machine without
// one.
var knownQEMUPaths = "/usr/libexec/xen-qemu-system-i386:/usr/lib/xen/bin/qemu-system-i386"

// NotFoundError lists where the real QEMU was looked for.
type NotFoundError struct{ Tried []string }

func (e *NotFoundError) Error() string {
	return "no real QEMU found; looked at " + strings.Join(e.Tried, ", ")
}

// NotExecutableError is a QEMU path that cannot be executed, or that is
// dmlaunch itself.
type NotExecutableError struct {
	Path, Reason string
}

func (e *NotExecutableError) Error() string { return e.Path + " " + e.Reason }

// FileID identifies a file across paths, symlinks and hard links.
type FileID struct{ Dev, Ino uint64 }

// IDOf stats path, following symlinks. It uses a plain stat(2): every
// launch stats its own binary and the QEMU it is about to exec.
func IDOf(path string) (FileID, error) {
	_, id, err := statFile(path)
	return id, err
}

func statFile(path string) (uint32, FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, FileID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Mode, FileID{Dev: st.Dev, Ino: st.Ino}, nil
}

// FindQEMU decides which binary to exec: DMLAUNCH_QEMU if set, else
// "<own path>.distrib" (where scripts/install.sh moves the real one),
// else the known paths. self is dmlaunch's own file, to refuse exec'ing
// itself through any path, symlink or hard link; nil skips that check.
func FindQEMU(setting string, ownPaths []string, self *FileID) (string, error) {
	return FindQEMUAmong(setting, ownPaths, KnownQEMUPaths, self)
}

// FindQEMUAmong is FindQEMU with the known paths given, for checking an
// installation under another root.
func FindQEMUAmong(setting string, ownPaths, known []string, self *FileID) (string, error) {
	if setting != "" {
		_, err := checkQEMU(setting, self)
		return setting, err
	}
	var tried, candidates []string
	for _, p := range ownPaths {
		if p != "" {
			candidates = append(candidates, p+".distrib")
		}
	}
	candidates = append(candidates, known...)
	for i, c := range candidates {
		if slices.Contains(candidates[:i], c) {
			continue
		}
		missing, err := checkQEMU(c, self)
		if err == nil {
			return c, nil
		}
		if missing {
			tried = append(tried, c+" (missing)")
			continue
		}
		if strings.HasSuffix(c, ".distrib") {
			return c, err // the installed real QEMU exists but is unusable
		}
		tried = append(tried, fmt.Sprintf("%s (%s)", c, err.(*NotExecutableError).Reason))
	}
	return "", &NotFoundError{Tried: tried}
}

// checkQEMU says whether path can be exec'd as the real QEMU, and
// whether it is missing altogether.
func checkQEMU(path string, self *FileID) (missing bool, err error) {
	mode, id, err := statFile(path)
	if err != nil {
		return true, &NotExecutableError{path, "cannot be read: " + err.Error()}
	}
	if self != nil && id == *self {
		return false, &NotExecutableError{path, "is dmlaunch itself"}
	}
	if mode&unix.S_IFMT != unix.S_IFREG {
		return false, &NotExecutableError{path, "is not a regular file"}
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return false, &NotExecutableError{path, "is not executable"}
	}
	return false, nil
}
