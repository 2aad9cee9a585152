package launcher

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary is also the fake QEMU: started with FAKE_QEMU_REPORT
// set, it writes what it was given (pid, argv, environment, open fds) to
// that file and exits with FAKE_QEMU_EXIT. Started as "strace" with
// FAKE_STRACE_GATE set, it is a strace that waits at that FIFO and leaves
// without attaching (fakeStrace).
func TestMain(m *testing.M) {
	if gate := os.Getenv("FAKE_STRACE_GATE"); gate != "" && filepath.Base(os.Args[0]) == "strace" {
		fakeStrace(gate)
	}
	if report := os.Getenv("FAKE_QEMU_REPORT"); report != "" {
		fakeQEMU(report)
	}
	dir, err := os.MkdirTemp("", "dmlaunch-test")
	if err != nil {
		panic(err)
	}
	code := 1
	if err := buildDmlaunch(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// FakeReport is what the fake QEMU saw.
type FakeReport struct {
	PID   int               `json:"pid"`
	Argv  []string          `json:"argv"`
	Env   map[string]string `json:"env"`
	FDs   map[int]string    `json:"fds"`
	Exits int               `json:"exits"`
	// CoreLimit is the soft RLIMIT_CORE the fake QEMU was given.
	CoreLimit uint64 `json:"core_limit"`
}

func fakeQEMU(report string) {
	r := FakeReport{PID: os.Getpid(), Argv: os.Args, Env: map[string]string{}, FDs: map[int]string{}}
	var core unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_CORE, &core) == nil {
		r.CoreLimit = core.Cur
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		r.Env[k] = v
	}
	// Only fds without close-on-exec came through the exec; the Go
	// runtime of this fake opens others of its own (cgroup files).
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		r.FDs[fd] = target
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(report, b, 0o600); err != nil {
		os.Exit(99)
	}
	if os.Getenv("FAKE_QEMU_IGNORE") == "TERM" {
		signal.Ignore(syscall.SIGTERM)
	}
	if os.Getenv("FAKE_QEMU_HOLD") != "" {
		// Run until killed, like a device model. (A bare select{} is a
		// deadlock the runtime kills when cgo is off.)
		for {
			time.Sleep(time.Hour)
		}
	}
	code, _ := strconv.Atoi(os.Getenv("FAKE_QEMU_EXIT"))
	os.Exit(code)
}

// fakeStrace says it was started (its argv in gate+".args"), then waits
// until the test opens the FIFO gate for writing and closes it, and exits
// without attaching: the launch it serves is held between its lease and
// QEMU's start for as long as the test needs.
func fakeStrace(gate string) {
	tmp := gate + ".args.new"
	if err := os.WriteFile(tmp, []byte(strings.Join(os.Args, "\n")), 0o600); err != nil {
		os.Exit(98)
	}
	if err := os.Rename(tmp, gate+".args"); err != nil {
		os.Exit(98)
	}
	f, err := os.Open(gate) // blocks until the test opens it to write
	if err != nil {
		os.Exit(97)
	}
	_, _ = io.Copy(io.Discard, f)
	os.Exit(0)
}

var dmlaunchBin, dmlaunchNoQEMUBin string

// buildDmlaunch builds the real command twice: as shipped, and with the
// known QEMU paths pointing nowhere, for the "no QEMU at all" case on a
// machine that has one.
func buildDmlaunch(dir string) error {
	dmlaunchBin = filepath.Join(dir, "dmlaunch")
	dmlaunchNoQEMUBin = filepath.Join(dir, "dmlaunch-noqemu")
	builds := [][]string{
		{"build", "-o", dmlaunchBin, "../cmd/dmlaunch"},
		{"build", "-ldflags", "-X github.com/dmlaunch/dmlaunch/launcher.knownQEMUPaths=/nonexistent/xen-qemu:/nonexistent/qemu-system-i386",
			"-o", dmlaunchNoQEMUBin, "../cmd/dmlaunch"},
	}
	for _, args := range builds {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func readReport(path string) (FakeReport, bool) {
	var r FakeReport
	b, err := os.ReadFile(path)
	if err != nil {
		return r, false
	}
	return r, json.Unmarshal(b, &r) == nil
}

func sortedFDs(m map[int]string) []int {
	var out []int
	for fd := range m {
		out = append(out, fd)
	}
	sort.Ints(out)
	return out
}
