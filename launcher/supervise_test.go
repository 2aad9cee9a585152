package launcher

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// freeBase returns a base port whose port for domid is free now.
func freeBase(t *testing.T, domid int) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	require.Greater(t, port, domid)
	return port - domid
}

// supervised is a running dmlaunch in a debug mode.
type supervised struct {
	cmd    *exec.Cmd
	stderr *realtest.SyncBuffer
	stdout *realtest.SyncBuffer
	state  string
	logDir string
	port   int
	done   chan struct{}
	status int
}

func startSupervised(t *testing.T, qemu string, env []string, args []string, extra ...*os.File) *supervised {
	t.Helper()
	return startSupervisedIn(t, nil, qemu, env, args, extra...)
}

// startSupervisedIn starts dmlaunch through wrap, a command that execs
// its arguments (so dmlaunch keeps the pid), such as one that hides a
// cgroup hierarchy in a mount namespace.
func startSupervisedIn(t *testing.T, wrap []string, qemu string, env []string, args []string, extra ...*os.File) *supervised {
	t.Helper()
	dir := t.TempDir()
	s := &supervised{stderr: &realtest.SyncBuffer{}, stdout: &realtest.SyncBuffer{}, state: filepath.Join(dir, "state"), logDir: filepath.Join(dir, "log"), done: make(chan struct{})}
	base := freeBase(t, 5)
	s.port = base + 5
	full := append(append(append([]string(nil), wrap...), dmlaunchBin), args...)
	s.cmd = exec.Command(full[0], full[1:]...)
	s.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_STATE_DIR=" + s.state, "DMLAUNCH_LOG_DIR=" + s.logDir,
		"DMLAUNCH_QEMU=" + qemu, "XEN_DOMAIN_ID=5", fmt.Sprintf("DMLAUNCH_GDB_LISTEN=127.0.0.1:%d", base),
	}, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	s.cmd.ExtraFiles = extra
	// QEMU's working directory: a relative core_pattern puts cores there.
	s.cmd.Dir = dir
	require.NoError(t, s.cmd.Start())
	go func() {
		err := s.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() >= 0:
			s.status = exit.ExitCode()
		case errors.As(err, &exit):
			s.status = -1 // killed
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("dmlaunch %q\nstderr:\n%s", args, s.stderr.String())
		}
	})
	return s
}

func (s *supervised) waitLog(t *testing.T, substr string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(s.stderr.String(), substr) }, 30*time.Second, 10*time.Millisecond,
		"waiting for %q in dmlaunch's log", substr)
}

// waitLogCount waits until substr is in dmlaunch's log n times: for an
// event that happens more than once, such as a debugger leaving.
func (s *supervised) waitLogCount(t *testing.T, substr string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Count(s.stderr.String(), substr) >= n }, 30*time.Second, 10*time.Millisecond,
		"waiting for %q %d times in dmlaunch's log", substr, n)
}

func (s *supervised) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.status
	case <-time.After(timeout):
		t.Fatalf("dmlaunch did not exit within %v", timeout)
		return 0
	}
}

func (s *supervised) record(t *testing.T) inventory.Entry {
	t.Helper()
	var rec inventory.Entry
	require.Eventually(t, func() bool {
		entries, err := inventory.List(s.state)
		if err != nil || len(entries) != 1 || entries[0].Starting {
			return false // none yet, or the first one, written before QEMU starts
		}
		rec = entries[0]
		return true
	}, 30*time.Second, 10*time.Millisecond, "waiting for the registry record of the running QEMU")
	return rec
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	id, err := proc.Of(pid)
	return err == nil && id.Alive()
}

func TestSupervisedPassesFDsAndExitStatus(t *testing.T) {
	f3, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f3.Close()
	f7, err := os.CreateTemp(t.TempDir(), "qmp")
	require.NoError(t, err)
	defer f7.Close()
	report := filepath.Join(t.TempDir(), "report.json")
	s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_EXIT=3"},
		[]string{"-name", "fds", "-machine", "pc", "-serial", "pty"}, f3, nil, nil, nil, f7)
	assert.Equal(t, 3, s.wait(t, 30*time.Second), "the launcher exits with QEMU's status")
	r, ok := readReport(report)
	require.True(t, ok)
	assert.NotEqual(t, s.cmd.Process.Pid, r.PID, "QEMU is the launcher's child")
	assert.Equal(t, "/dev/null", r.FDs[3])
	assert.Equal(t, f7.Name(), r.FDs[7])
	allowed := append([]int{0, 1, 2, 3, 7}, inheritableFDs(t)...)
	for _, fd := range sortedFDs(r.FDs) {
		assert.Contains(t, allowed, fd, "fd %d (%s) leaked into QEMU", fd, r.FDs[fd])
	}
	assert.Equal(t, "5", r.Env["XEN_DOMAIN_ID"])
	var own unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_CORE, &own))
	if own.Max == unix.RLIM_INFINITY {
		assert.Equal(t, uint64(unix.RLIM_INFINITY), r.CoreLimit, "QEMU's cores are kept whole")
	}
	// The serial port goes to the launcher's pty, and QEMU gets a QMP socket.
	args := strings.Join(r.Argv, " ")
	assert.Regexp(t, `-serial /dev/pts/\d+ `, args)
	assert.Contains(t, args, "-chardev socket,id=dmlaunch-qmp,path="+filepath.Join(s.state, "5.qmp")+",server=on,wait=off -mon chardev=dmlaunch-qmp,mode=control")
	entries, err := inventory.List(s.state)
	require.NoError(t, err)
	assert.Empty(t, entries, "the record is removed on exit")
	assert.Contains(t, s.stderr.String(), "QEMU (pid ")
	assert.Contains(t, s.stderr.String(), "exited with status 3")
}

func TestSupervisedSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1"},
				[]string{"-name", "sig", "-machine", "pc"})
			rec := s.record(t)
			require.Eventually(t, func() bool { _, ok := readReport(report); return ok }, 10*time.Second, 10*time.Millisecond)
			require.NoError(t, s.cmd.Process.Signal(sig))
			// The fake QEMU dies of the forwarded signal: 128+signal.
			assert.Equal(t, 128+int(sig), s.wait(t, 30*time.Second))
			assert.False(t, alive(rec.QEMUPID), "QEMU is gone")
			entries, _ := inventory.List(s.state)
			assert.Empty(t, entries, "the record is removed")
			assert.Contains(t, s.stderr.String(), "stopping QEMU (pid")
		})
	}
}

func TestSupervisedGraceThenKill(t *testing.T) {
	// A second signal skips the grace period: QEMU that ignores the first
	// one (the fake holds SIGTERM ignored here) is killed at once.
	report := filepath.Join(t.TempDir(), "report.json")
	s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1", "FAKE_QEMU_IGNORE=TERM"},
		[]string{"-machine", "pc"})
	rec := s.record(t)
	require.Eventually(t, func() bool { _, ok := readReport(report); return ok }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	s.waitLog(t, "stopping QEMU")
	time.Sleep(200 * time.Millisecond)
	assert.True(t, alive(rec.QEMUPID), "QEMU ignoring SIGTERM still runs in the grace period")
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 128+int(syscall.SIGKILL), s.wait(t, 10*time.Second))
	assert.Contains(t, s.stderr.String(), "again: killing QEMU")
}

func TestSupervisedSIGKILLTakesQEMUAlong(t *testing.T) {
	report := filepath.Join(t.TempDir(), "report.json")
	s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1"},
		[]string{"-machine", "pc"})
	rec := s.record(t)
	require.Eventually(t, func() bool { _, ok := readReport(report); return ok }, 10*time.Second, 10*time.Millisecond)
	// Let the runtime shuffle threads for a while: pdeathsig must not fire
	// because a thread retired, only because the launcher died.
	time.Sleep(300 * time.Millisecond)
	require.True(t, alive(rec.QEMUPID))
	require.NoError(t, s.cmd.Process.Kill())
	require.Eventually(t, func() bool { return !alive(rec.QEMUPID) }, time.Second, 10*time.Millisecond, "QEMU gone within a second")
}

func TestDebugPortRefusals(t *testing.T) {
	base := freeBase(t, 5)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+5))
	require.NoError(t, err)
	defer busy.Close()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"busy port", []string{fmt.Sprintf("DMLAUNCH_GDB_LISTEN=127.0.0.1:%d", base)}, fmt.Sprintf("debug port 127.0.0.1:%d is already in use", base+5)},
		{"port out of range", []string{"DMLAUNCH_GDB_LISTEN=127.0.0.1:65533"}, "debug port 65533+5 is beyond 65535"},
		{"wide address without allowlist", []string{"DMLAUNCH_GDB_LISTEN=0.0.0.0:1234"}, "set DMLAUNCH_GDB_ALLOW"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := launch(t, run{args: []string{"-machine", "pc"}, env: append([]string{"DMLAUNCH_DEBUG=gdb", "XEN_DOMAIN_ID=5"}, tt.env...)})
			assert.Equal(t, ExitBadInput, r.status)
			assert.False(t, r.started, "QEMU must not start")
			assert.Contains(t, r.stderr, tt.want)
		})
	}
}

func TestProbeAndQdiskAreNeverDebugged(t *testing.T) {
	for name, args := range map[string][]string{
		"probe": strings.Fields("-S -no-user-config -nodefaults -nographic -machine none,accel=xen"),
		"qdisk": strings.Fields("-xen-domid 0 -xen-attach -name domain-0 -nographic -M xenpv -monitor /dev/null -serial /dev/null -parallel /dev/null"),
	} {
		t.Run(name, func(t *testing.T) {
			r := launch(t, run{args: args, env: []string{"DMLAUNCH_DEBUG=gdb"}})
			require.True(t, r.started)
			assert.Equal(t, r.pid, r.fake.PID, "exec'd in place, not supervised")
			assert.Equal(t, args, r.fake.Argv[1:], "argv untouched")
			assert.Contains(t, r.stderr, ", pass-through: ")
		})
	}
}

func TestDebugDomainsSelects(t *testing.T) {
	r := launch(t, run{args: []string{"-xen-domid", "6", "-name", "db-1", "-machine", "xenfv"}, env: []string{"DMLAUNCH_DEBUG=gdb", "DMLAUNCH_DEBUG_DOMAINS=web*,5", "DMLAUNCH_DRY_RUN=1"}})
	assert.Contains(t, r.stdout, "mode:    pass-through")
	assert.Contains(t, r.stdout, "DMLAUNCH_DEBUG_DOMAINS does not select this domain")
	r = launch(t, run{args: []string{"-xen-domid", "6", "-name", "web-1", "-machine", "xenfv"}, env: []string{"DMLAUNCH_DEBUG=gdb", "DMLAUNCH_DEBUG_DOMAINS=web*,5", "DMLAUNCH_DRY_RUN=1"}})
	assert.Contains(t, r.stdout, "mode:    gdb")
}

func TestPTYSerialIsPublishedForXLConsole(t *testing.T) {
	// No Xen here: a stand-in xenstore-write records its arguments.
	bin := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	require.NoError(t, os.WriteFile(filepath.Join(bin, "xenstore-write"),
		[]byte("#!/bin/sh\nprintf '%s\\n' \"$@\" >> "+calls+"\n"), 0o755))
	for _, tt := range []struct {
		serial  string
		publish bool
	}{{"pty", true}, {"null", false}} {
		t.Run(tt.serial, func(t *testing.T) {
			os.Remove(calls)
			report := filepath.Join(t.TempDir(), "report.json")
			s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1",
				"PATH=" + bin + ":" + os.Getenv("PATH")}, []string{"-machine", "pc", "-serial", tt.serial})
			rec := s.record(t)
			require.Eventually(t, func() bool { _, ok := readReport(report); return ok }, 10*time.Second, 10*time.Millisecond)
			// Publication happens before the launcher starts waiting on
			// QEMU: once it has exited, whatever it published is there.
			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			s.wait(t, 30*time.Second)
			b, err := os.ReadFile(calls)
			if tt.publish {
				require.NoError(t, err)
				assert.Equal(t, "/local/domain/5/serial/0/tty\n"+rec.ConsolePTY+"\n", string(b))
			} else {
				assert.True(t, os.IsNotExist(err), "nothing published when the toolstack asked for no pty")
			}
		})
	}
}

func TestLauncherClosesItsCopiesOfInheritedFDs(t *testing.T) {
	f7, err := os.CreateTemp(t.TempDir(), "toolstack-fd")
	require.NoError(t, err)
	defer f7.Close()
	report := filepath.Join(t.TempDir(), "report.json")
	s := startSupervised(t, os.Args[0], []string{"DMLAUNCH_DEBUG=console", "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1"},
		[]string{"-name", "fds", "-machine", "pc"}, nil, nil, nil, nil, f7)
	var r FakeReport
	require.Eventually(t, func() bool { var ok bool; r, ok = readReport(report); return ok }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, f7.Name(), r.FDs[7], "QEMU has the toolstack's fd 7")
	// QEMU can report before the launcher has gone on from starting it;
	// the record is written after the launcher dropped its copies.
	s.record(t)
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/7", s.cmd.Process.Pid))
	assert.True(t, err != nil || target != f7.Name(), "the launcher no longer holds the toolstack's fd 7 (it has %q)", target)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	s.wait(t, 30*time.Second)
}
