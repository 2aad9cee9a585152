// Package realtest helps tests that drive real programs (QEMU, gdbserver,
// gdb): under CI a missing program fails the test, elsewhere it skips it.
package realtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Debian's builds, which the project's scripts install.
const (
	QEMUTCG = "/usr/libexec/qemu-system-i386"
	QEMUXen = "/usr/libexec/xen-qemu-system-i386"
	// Logrotate by its path: /usr/sbin is not on every user's PATH.
	Logrotate = "/usr/sbin/logrotate"
)

// Need returns the path of each program (an absolute path or a name on
// PATH), failing the test under CI=true and skipping it elsewhere when one
// is missing. Under -short (make unit) it skips the test: tests that drive
// real programs are the slow ones.
func Need(t testing.TB, programs ...string) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives " + strings.Join(programs, ", ") + ": skipped under -short; run without it (make test) for the real components")
	}
	out := make([]string, 0, len(programs))
	for _, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			msg := p + " is not installed (run scripts/deps.sh): " + err.Error()
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		out = append(out, path)
	}
	return out
}

// SyncBuffer collects a child's output while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tmpfs mounts a tmpfs of the given size on a fresh directory for the
// test, to fill a disk for real; it needs root (CAP_SYS_ADMIN), failing
// the test under CI=true without it and skipping it elsewhere.
func Tmpfs(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		msg := "mount a tmpfs (needs root): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// UnixServer listens on a fresh unix socket and runs handle for every
// connection on its own goroutine; the test's end closes the listener and
// every connection. It returns the socket's path. Stand-in servers (a QMP
// peer that misbehaves as told) are built on it.
func UnixServer(t testing.TB, handle func(conn net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				go func() { <-done; conn.Close() }()
				handle(conn)
			}()
		}
	}()
	return path
}
