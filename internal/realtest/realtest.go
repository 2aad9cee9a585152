// Package realtest helps tests that drive real programs (QEMU, gdbserver,
// gdb): under CI a missing program fails the test, elsewhere it skips it.
package realtest

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Debian's builds, which the project's scripts install.
const (
	QEMUTCG = "/usr/libexec/qemu-system-i386"
	QEMUXen = "/usr/libexec/xen-qemu-system-i386"
)

// Need returns the path of each program (an absolute path or a name on
// PATH), failing the test under CI=true and skipping it elsewhere when one
// is missing.
func Need(t testing.TB, programs ...string) []string {
	t.Helper()
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
