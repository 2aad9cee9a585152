package launcher

import (
	"fmt"
	"os"
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

// FindQEMU decides which binary to exec: DMLAUNCH_QEMU if set, else
// "<own path>.distrib" (where scripts/install.sh moves the real one),
// else the known paths. self is dmlaunch's own file, to refuse exec'ing
// itself through any path, symlink or hard link.
func FindQEMU(setting string, ownPaths []string, self os.FileInfo) (string, error) {
	return FindQEMUAmong(setting, ownPaths, KnownQEMUPaths, self)
}

// FindQEMUAmong is FindQEMU with the known paths given, for checking an
// installation under another root.
func FindQEMUAmong(setting string, ownPaths, known []string, self os.FileInfo) (string, error) {
	if setting != "" {
		return setting, checkQEMU(setting, self)
	}
	var tried []string
	seen := map[string]bool{}
	var candidates []string
	for _, p := range ownPaths {
		if p != "" {
			candidates = append(candidates, p+".distrib")
		}
	}
	candidates = append(candidates, known...)
	for _, c := range candidates {
		if seen[c] {
			continue
		}
		seen[c] = true
		err := checkQEMU(c, self)
		if err == nil {
			return c, nil
		}
		if _, statErr := os.Stat(c); statErr != nil {
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

func checkQEMU(path string, self os.FileInfo) error {
	fi, err := os.Stat(path)
	if err != nil {
		return &NotExecutableError{path, "cannot be read: " + err.Error()}
	}
	if self != nil && os.SameFile(fi, self) {
		return &NotExecutableError{path, "is dmlaunch itself"}
	}
	if !fi.Mode().IsRegular() {
		return &NotExecutableError{path, "is not a regular file"}
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return &NotExecutableError{path, "is not executable"}
	}
	return nil
}
