package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var dmlaunchBin, dmctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dmctl-test")
	if err != nil {
		panic(err)
	}
	dmlaunchBin, dmctlBin = filepath.Join(dir, "dmlaunch"), filepath.Join(dir, "dmctl")
	code := 1
	out, err := exec.Command("go", "build", "-o", dir+"/", "../dmlaunch", ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// domain is a real QEMU started by dmlaunch in a debug mode.
type domain struct {
	cmd    *exec.Cmd
	stderr *realtest.SyncBuffer
	state  string
	domid  int
	done   chan struct{}
}

func startDomain(t *testing.T, state string, domid int, mode, name, line string) *domain {
	t.Helper()
	return startDomainLogging(t, state, filepath.Join(t.TempDir(), "log"), domid, mode, name, line)
}

// startDomainLogging is startDomain with the console logs in logDir, and
// env added to dmlaunch's environment.
func startDomainLogging(t *testing.T, state, logDir string, domid int, mode, name, line string, env ...string) *domain {
	t.Helper()
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	img, err := guest.BootSector(guest.Options{Message: line + "\r\n"})
	require.NoError(t, err)
	disk := filepath.Join(t.TempDir(), "boot.img")
	require.NoError(t, os.WriteFile(disk, img, 0o644))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := l.Addr().(*net.TCPAddr).Port - domid
	l.Close()
	d := &domain{stderr: &realtest.SyncBuffer{}, state: state, domid: domid, done: make(chan struct{})}
	d.cmd = exec.Command(dmlaunchBin, "-name", name, "-machine", "pc", "-accel", "tcg", "-display", "none",
		"-nodefaults", "-no-user-config", "-serial", "pty", "-drive", "file="+disk+",format=raw,if=floppy")
	d.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=" + qemu, "DMLAUNCH_DEBUG=" + mode,
		"DMLAUNCH_STATE_DIR=" + state, "DMLAUNCH_LOG_DIR=" + logDir,
		fmt.Sprintf("XEN_DOMAIN_ID=%d", domid), fmt.Sprintf("DMLAUNCH_GDB_LISTEN=127.0.0.1:%d", base)}
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.Stderr = d.stderr
	d.cmd.Dir = t.TempDir() // where a relative core_pattern puts a core
	require.NoError(t, d.cmd.Start())
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("dmlaunch (domain %d) log:\n%s", domid, d.stderr.String())
		}
	})
	require.Eventually(t, func() bool {
		entries, _ := inventory.Find(state, domid)
		return len(entries) == 1 && !entries[0].Stale && !entries[0].Starting
	}, 30*time.Second, 10*time.Millisecond, "domain %d registered, its QEMU running", domid)
	rec := d.record(t)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(rec.ConsoleLog)
		return strings.Contains(string(b), line)
	}, 30*time.Second, 10*time.Millisecond, "the guest wrote its line")
	return d
}

func (d *domain) record(t *testing.T) inventory.Entry {
	entries, err := inventory.Find(d.state, d.domid)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	return entries[0]
}

// terminal runs dmctl on a real pty, as a person at a terminal would.
type terminal struct {
	cmd    *exec.Cmd
	master *os.File
	out    *realtest.SyncBuffer
	done   chan struct{}
	err    error
}

func startTerminal(t *testing.T, env []string, args ...string) *terminal {
	t.Helper()
	tm := &terminal{out: &realtest.SyncBuffer{}, done: make(chan struct{})}
	tm.cmd = exec.Command(dmctlBin, args...)
	tm.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TERM=xterm", "DMLAUNCH_CONFIG="}, env...)
	var err error
	tm.master, err = pty.StartWithSize(tm.cmd, &pty.Winsize{Rows: 40, Cols: 120})
	require.NoError(t, err)
	go func() { _, _ = copyAll(tm.out, tm.master) }()
	go func() { tm.err = tm.cmd.Wait(); close(tm.done) }()
	t.Cleanup(func() {
		select {
		case <-tm.done:
		default:
			_ = tm.cmd.Process.Kill()
			<-tm.done
		}
		tm.master.Close()
		if t.Failed() {
			t.Logf("terminal output:\n%q", tm.out.String())
		}
	})
	return tm
}

func copyAll(dst *realtest.SyncBuffer, src *os.File) (int64, error) {
	buf := make([]byte, 4096)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			_, _ = dst.Write(buf[:k])
			n += int64(k)
		}
		if err != nil {
			return n, err
		}
	}
}

func (tm *terminal) typeText(t *testing.T, s string) {
	_, err := tm.master.Write([]byte(s))
	require.NoError(t, err)
}

// expect waits for substr to appear after the output's first `from` bytes.
func (tm *terminal) expect(t *testing.T, from int, substr string) int {
	t.Helper()
	var at int
	require.Eventually(t, func() bool {
		out := tm.out.String()
		if from > len(out) {
			return false
		}
		i := strings.Index(out[from:], substr)
		at = from + i + len(substr)
		return i >= 0
	}, 20*time.Second, 10*time.Millisecond, "waiting for %q", substr)
	return at
}

func (tm *terminal) exitStatus(t *testing.T) int {
	select {
	case <-tm.done:
	case <-time.After(20 * time.Second):
		t.Fatal("dmctl did not exit")
	}
	var exit *exec.ExitError
	if errors.As(tm.err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(t, tm.err)
	return 0
}

func TestMonitorShellThroughAPty(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	startDomain(t, state, 5, "console", "monitor guest", "monitor test guest")
	home := t.TempDir()
	env := []string{"HOME=" + home, "DMLAUNCH_STATE_DIR=" + state}
	tm := startTerminal(t, env, "monitor", "5")
	pos := tm.expect(t, 0, "(qemu) ")

	tm.typeText(t, "info status\r")
	pos = tm.expect(t, pos, "VM status: running")
	pos = tm.expect(t, pos, "(qemu) ")

	// Tab completes "info" from "inf".
	tm.typeText(t, "inf\t")
	pos = tm.expect(t, pos, "info")
	tm.typeText(t, " name\r")
	pos = tm.expect(t, pos, "monitor guest")
	pos = tm.expect(t, pos, "(qemu) ")

	// Ctrl-C clears a half-typed line.
	tm.typeText(t, "system_reset_not_really")
	tm.typeText(t, "\x03")
	pos = tm.expect(t, pos, "(qemu) ")
	tm.typeText(t, "info status\r")
	pos = tm.expect(t, pos, "VM status: running")
	assert.NotContains(t, tm.out.String()[pos:], "system_reset_not_really", "the aborted line was not run")
	pos = tm.expect(t, pos, "(qemu) ")

	// Up recalls the last command.
	tm.typeText(t, "\x1b[A")
	pos = tm.expect(t, pos, "info status")
	tm.typeText(t, "\r")
	pos = tm.expect(t, pos, "VM status: running")
	tm.expect(t, pos, "(qemu) ")

	// Ctrl-D leaves, with status 0.
	tm.typeText(t, "\x04")
	assert.Equal(t, 0, tm.exitStatus(t))
	hist, err := os.ReadFile(filepath.Join(home, ".dmctl_history"))
	require.NoError(t, err)
	// A command repeated at once is kept once, as shells do.
	assert.Equal(t, "info status\ninfo name\ninfo status\n", string(hist))
	assert.NotContains(t, string(hist), "system_reset_not_really")

	// The same commands through a pipe, for scripts.
	cmd := exec.Command(dmctlBin, "--state-dir", state, "monitor", "5")
	cmd.Stdin = strings.NewReader("info status\ninfo name\n")
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, "VM status: running\nmonitor guest\n", string(out))

	out, err = exec.Command(dmctlBin, "--state-dir", state, "monitor", "5", "-c", "info status").Output()
	require.NoError(t, err)
	assert.Equal(t, "VM status: running\n", string(out))
}

func TestConsoleThroughAPty(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	const line = "hello from the console guest"
	startDomain(t, state, 6, "console", "console guest", line)

	tm := startTerminal(t, []string{"DMLAUNCH_STATE_DIR=" + state}, "console", "6")
	slave, err := os.OpenFile(ptsName(t, tm.master), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer slave.Close()
	pos := tm.expect(t, 0, "--- the last ")
	pos = tm.expect(t, pos, line+"\r\n\r\n--- live ---\r\n")
	pos = tm.expect(t, pos, "Escape character is ^].")
	raw, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	require.NoError(t, err)
	assert.Zero(t, raw.Lflag&unix.ECHO, "raw mode while attached")

	tm.typeText(t, "\x1d")
	tm.expect(t, pos, "Detached from domain 6's console.")
	assert.Equal(t, 0, tm.exitStatus(t))
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	require.NoError(t, err)
	assert.NotZero(t, after.Lflag&unix.ECHO, "echo is back")
	assert.NotZero(t, after.Lflag&unix.ICANON, "line editing is back")
}

func ptsName(t *testing.T, master *os.File) string {
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	return fmt.Sprintf("/dev/pts/%d", n)
}

func TestGDBPrintPastedIntoAShellAttaches(t *testing.T) {
	realtest.Need(t, "gdbserver", "gdb")
	state := filepath.Join(t.TempDir(), "state")
	d := startDomain(t, state, 7, "gdb", "gdb guest", "gdb print guest")
	rec := d.record(t)
	out, err := exec.Command(dmctlBin, "--state-dir", state, "gdb", "7", "--print", "--host", "xenhost").Output()
	require.NoError(t, err)
	port := strings.TrimPrefix(rec.GDB, "127.0.0.1:")
	assert.Contains(t, string(out), fmt.Sprintf("#   ssh -N -L %s:127.0.0.1:%s root@xenhost &\n", port, port))

	sh := exec.Command("sh", "-c", string(out))
	sh.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	sh.Stdin = strings.NewReader("info inferiors\ndetach\n")
	got, err := sh.CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Contains(t, string(got), fmt.Sprintf("process %d", rec.QEMUPID), "the pasted commands attach gdb to the domain's QEMU")
	assert.Contains(t, string(got), "detached")
	require.Eventually(t, func() bool { return strings.Contains(d.stderr.String(), "left (gdbserver: exit 0)") }, 10*time.Second, 10*time.Millisecond)

	// Without --print, dmctl becomes the local gdb, attached, with QEMU's
	// binary loaded for symbols.
	local := exec.Command(dmctlBin, "--state-dir", state, "gdb", "7")
	local.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	local.Stdin = strings.NewReader("info inferiors\ninfo symbol main\ndetach\n")
	got, err = local.CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Contains(t, string(got), fmt.Sprintf("process %d", rec.QEMUPID))
	assert.Contains(t, string(got), "main in section .text of /usr/libexec/qemu-system-i386", "symbols come from the local binary (set sysroot /)")
	assert.NotContains(t, string(got), "from remote target", "nothing is fetched over the debug port")
	assert.Contains(t, string(got), "detached")
}

// gdb reaches the unix listener by the socket's path; --print says so,
// and never gdbserver's "unix::PATH", which gdb 13 takes for a host name.
func TestGDBPrintForTheUnixSocketAttaches(t *testing.T) {
	realtest.Need(t, "gdbserver", "gdb")
	state := filepath.Join(t.TempDir(), "state")
	d := startDomainLogging(t, state, filepath.Join(t.TempDir(), "log"), 7, "gdb", "unix guest", "gdb unix guest", "DMLAUNCH_GDB_LISTEN=unix")
	rec := d.record(t)
	sock := filepath.Join(state, "7.gdb")
	require.Equal(t, sock, rec.GDB, "the record's target is the socket's path")
	out, err := exec.Command(dmctlBin, "--state-dir", state, "gdb", "7", "--print", "--host", "xenhost").Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), "#   ssh -N -L 1241:"+sock+" root@xenhost &\n")
	assert.Contains(t, string(out), "gdb -q -ex 'target remote "+sock+"'\n")
	assert.NotContains(t, string(out), "unix:")

	sh := exec.Command("sh", "-c", string(out))
	sh.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	sh.Stdin = strings.NewReader("info inferiors\ndetach\n")
	got, err := sh.CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Contains(t, string(got), fmt.Sprintf("process %d", rec.QEMUPID), "the pasted command attaches gdb to the domain's QEMU")
	assert.Contains(t, string(got), "detached")
}

func TestListAgreesWithProcForTwoLaunches(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	a := startDomain(t, state, 8, "console", "first", "first guest")
	b := startDomain(t, state, 9, "gdb", "second", "second guest")

	out, err := exec.Command(dmctlBin, "--state-dir", state, "list", "--json").Output()
	require.NoError(t, err)
	var entries []inventory.Entry
	require.NoError(t, json.Unmarshal(out, &entries))
	require.Len(t, entries, 2)
	for i, d := range []*domain{a, b} {
		en := entries[i]
		assert.Equal(t, d.domid, en.Domid)
		assert.False(t, en.Stale)
		assert.Equal(t, d.cmd.Process.Pid, en.Launcher.PID, "the launcher is the process the toolstack started")
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", en.QEMUPID))
		require.NoError(t, err, "QEMU pid %d runs", en.QEMUPID)
		assert.Equal(t, en.Argv, strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00"))
		ppid := parentOf(t, en.QEMUPID)
		assert.Equal(t, en.Launcher.PID, ppid, "QEMU is the launcher's child")
	}
	assert.Equal(t, "gdb", entries[1].Mode)
	assert.NotEmpty(t, entries[1].GDB)
	assert.Empty(t, entries[0].GDB)

	// A killed launcher's record shows as stale, and dmctl says so.
	require.NoError(t, a.cmd.Process.Kill())
	<-a.done
	out, err = exec.Command(dmctlBin, "--state-dir", state, "list").Output()
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^8\s+first\s+.*stale$`, string(out))
	assert.Regexp(t, `(?m)^9\s+second\s+.*running$`, string(out))
	res, err := exec.Command(dmctlBin, "--state-dir", state, "console", "8").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(res), "domain 8: its launcher (pid")
	assert.Contains(t, string(res), "is gone; the record")
}

func parentOf(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var ppid int
	_, err = fmt.Sscan(f[1], &ppid)
	require.NoError(t, err)
	return ppid
}

func TestConsoleRestoresTheTerminalOnSIGTERMAndOnALostPty(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	d := startDomain(t, state, 10, "console", "ends", "console guest that ends")

	check := func(t *testing.T, tm *terminal) {
		slave, err := os.OpenFile(ptsName(t, tm.master), os.O_RDWR|unix.O_NOCTTY, 0)
		require.NoError(t, err)
		defer slave.Close()
		after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		require.NoError(t, err)
		assert.NotZero(t, after.Lflag&unix.ECHO, "echo is back")
		assert.NotZero(t, after.Lflag&unix.ICANON, "line editing is back")
	}

	t.Run("SIGTERM", func(t *testing.T) {
		tm := startTerminal(t, []string{"DMLAUNCH_STATE_DIR=" + state}, "console", "10")
		tm.expect(t, 0, "Escape character is ^].")
		require.NoError(t, tm.cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, 128+int(syscall.SIGTERM), tm.exitStatus(t))
		check(t, tm)
	})

	t.Run("lost pty", func(t *testing.T) {
		tm := startTerminal(t, []string{"DMLAUNCH_STATE_DIR=" + state}, "console", "10")
		pos := tm.expect(t, 0, "Escape character is ^].")
		// The toolstack destroys the domain: the launcher and its ptys go.
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
		<-d.done
		tm.expect(t, pos, "The console pty closed")
		assert.Equal(t, exitFailure, tm.exitStatus(t))
		check(t, tm)
	})
}

func TestMonitorErrors(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(state, 0o700))
	me, err := procSelf()
	require.NoError(t, err)
	dead := filepath.Join(t.TempDir(), "refusing.qmp")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	l.Close() // the socket file stays, nobody accepts: connections are refused
	for _, r := range []struct {
		domid int
		mode  string
		qmp   string
	}{{3, "pass-through", ""}, {4, "console", dead}} {
		writeRecord(t, state, r.domid, r.mode, r.qmp, me)
	}

	tests := []struct {
		args   []string
		status int
		want   []string
	}{
		{[]string{"monitor", "3"}, exitMonitorNotSent, []string{"domain 3 was launched in pass-through mode and has no dmlaunch QMP socket",
			"/var/run/xen/qmp-libxl-3", "dmctl monitor --qmp /var/run/xen/qmp-libxl-3 3"}},
		{[]string{"monitor", "4", "-c", "info status"}, exitMonitorNotSent, []string{"QMP socket " + dead, "connection refused", "nothing was sent"}},
		{[]string{"monitor", "99"}, exitMonitorNotSent, []string{"domain 99: no launch recorded in " + state}},
		{[]string{"monitor", "5", "--qmp", filepath.Join(state, "none.qmp")}, exitMonitorNotSent, []string{"no such file or directory"}},
		{[]string{"gdb", "3"}, exitFailure, []string{"domain 3 runs in pass-through mode, without a debug port"}},
		{[]string{"console", "3"}, exitFailure, []string{"domain 3 runs in pass-through mode and has no console pty"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, status := runDmctl(t, append([]string{"--state-dir", state}, tt.args...)...)
			assert.Equal(t, tt.status, status)
			for _, w := range tt.want {
				assert.Contains(t, out, w)
			}
		})
	}
}

// The real QEMU's human monitor: its error messages give exit status 1, and
// a QEMU stopped in a debugger, or by a signal, is reported as that at once
// (with its record) or after the timeout (with only its socket).
func TestMonitorWithRealQEMU(t *testing.T) {
	realtest.Need(t, "gdbserver", "gdb")
	state := filepath.Join(t.TempDir(), "state")
	d := startDomain(t, state, 11, "gdb", "monitored", "monitor status guest")
	rec := d.record(t)
	monitor := func(args ...string) (string, string, int) {
		stdout, stderr, status, _, _ := monitorRun(t, "", append([]string{"--state-dir", state, "monitor", "11"}, args...)...)
		return stdout, stderr, status
	}

	out, _, status := monitor("-c", "info status")
	assert.Equal(t, 0, status)
	assert.Equal(t, "VM status: running\n", out)
	for _, bad := range []string{"bogus", "info bogus", "stop now please", "x /2x nonsense", "device_del nope", "cont extra words"} {
		out, stderr, status := monitor("-c", bad)
		assert.Equal(t, exitMonitorCommandFailed, status, "%q: QEMU printed %q", bad, stderr)
		assert.Empty(t, out)
		assert.Contains(t, stderr, "dmctl monitor: "+bad+": ")
		t.Logf("%q: status %d: %q", bad, status, stderr)
	}
	out, stderr, status, _, _ := monitorRun(t, "info status\nbogus\ninfo name\n", "--state-dir", state, "monitor", "11")
	assert.Equal(t, exitMonitorCommandFailed, status)
	assert.Equal(t, "VM status: running\nmonitored\n", out)
	assert.Equal(t, "dmctl monitor: bogus: unknown command: 'bogus'\n", stderr)

	// gdb stops QEMU and, while it is stopped, runs dmctl.
	script := filepath.Join(t.TempDir(), "monitor.sh")
	require.NoError(t, os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\n%s --state-dir %s monitor 11 -c 'info status'\necho \"status $?\"\n%s monitor --qmp %s --timeout 1s 11 -c 'info status'\necho \"status $?\"\n",
		dmctlBin, state, dmctlBin, rec.QMP)), 0o755))
	gdb := exec.Command("gdb", "-nx", "-batch", "-ex", "target remote "+rec.GDB, "-ex", "shell "+script, "-ex", "detach")
	gdb.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	got, err := gdb.CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Regexp(t, fmt.Sprintf(`dmctl monitor: QMP socket %s: QEMU \(pid %d\) is stopped in a debugger \(gdbserver, pid \d+\): its monitor answers once the debugger lets it run \(gdb: continue, or detach\); nothing was sent\nstatus 3\n`, regexp.QuoteMeta(rec.QMP), rec.QEMUPID), string(got))
	assert.Regexp(t, `QMP socket \S+: QEMU accepted the connection but sent no QMP greeting within 1s; QEMU \(pid \d+\) is stopped in a debugger \(gdbserver, pid \d+\).*; nothing was sent\nstatus 3\n`, string(got),
		"with only the socket, QEMU is found through it")

	// Detached, QEMU answers again.
	out, _, status = monitor("-c", "info status")
	assert.Equal(t, 0, status)
	assert.Equal(t, "VM status: running\n", out)

	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGSTOP))
	_, stderr, status = monitor("-c", "info status")
	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGCONT))
	assert.Equal(t, exitMonitorNotSent, status)
	assert.Contains(t, stderr, fmt.Sprintf("QEMU (pid %d) is stopped (T (stopped)): its monitor answers once it runs again (kill -CONT %d)", rec.QEMUPID, rec.QEMUPID))
}

func runDmctl(t *testing.T, args ...string) (string, int) {
	cmd := exec.Command(dmctlBin, args...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

// Pass-through launches with the real QEMU: a guest's QEMU that exits (as
// at xl destroy, which signals the pid libxl recorded: QEMU's) has ended,
// which dmctl does not call damage; dom0's QEMU, which Debian's init script
// starts with -daemonize and -pidfile, runs on as the pid in its pidfile
// once the process dmlaunch exec'd has exited; and the next launch of any
// domain removes the ended records.
func TestPassThroughQEMUEndsAndDaemonizedQEMUIsFollowed(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	env := []string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=" + qemu, "DMLAUNCH_STATE_DIR=" + state}
	list := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(dmctlBin, append([]string{"--state-dir", state, "list"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "dmctl list %q: %s", args, stderr.String())
		return string(out), stderr.String()
	}

	// dom0's QEMU as /etc/init.d/xen starts it, but with the TCG build's
	// machine (without a hypervisor the Xen build stops before it
	// daemonizes) and the domid as leading argument (the TCG build refuses
	// -xen-domid: "Option not supported for this target"). The pidfile is
	// relative: QEMU writes it in its working directory.
	//
	// What this covers with the real QEMU: that it holds a lock on its
	// pidfile which F_GETLK attributes to the daemon, the start-time
	// check, and the pidfile made absolute. The -xen-domid comparison
	// cannot be had here with the same -xen-domid on both sides (no QEMU
	// that runs without Xen takes it); below, a record of another domain
	// that names this pidfile checks that the real daemon's command line
	// (no -xen-domid) is not taken for domain 3's, and
	// internal/registry's TestFollow runs both sides with -xen-domid
	// (another domain's QEMU holding the pidfile is not followed).
	dom0 := exec.Command(dmlaunchBin, "0", "-name", "dom0", "-nographic", "-M", "pc", "-accel", "tcg", "-nodefaults",
		"-daemonize", "-monitor", "none", "-serial", "none", "-parallel", "none", "-pidfile", "qemu-dom0.pid")
	dom0.Env, dom0.Dir = env, dir
	res, err := dom0.CombinedOutput()
	require.NoError(t, err, "QEMU's first process exits 0 once the daemon runs: %s", res)
	pidFile := filepath.Join(dir, "qemu-dom0.pid")
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	daemon, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	daemonGone := func() bool { id, err := proc.Of(daemon); return err != nil || !id.Alive() }
	t.Cleanup(func() {
		_ = syscall.Kill(daemon, syscall.SIGKILL)
	})
	require.NotEqual(t, dom0.Process.Pid, daemon)

	out, stderr := list()
	assert.Regexp(t, `(?m)^0\s+dom0\s+hvm\s+pass-through\s+`+strconv.Itoa(daemon)+`\s+\d+s\s+-\s+-\s+running$`, out, "the daemon's pid")
	assert.Empty(t, stderr)
	out, _ = list("--json")
	var entries []inventory.Entry
	require.NoError(t, json.Unmarshal([]byte(out), &entries))
	require.Len(t, entries, 1)
	assert.Equal(t, dom0.Process.Pid, entries[0].QEMUPID, "the record keeps the pid dmlaunch exec'd")
	assert.Equal(t, daemon, entries[0].DaemonPID)
	assert.Equal(t, pidFile, entries[0].PIDFile)

	// A record of domain 3 whose QEMU would have written the same
	// pidfile: the daemon that holds it runs without -xen-domid 3, so it
	// is not domain 3's QEMU, and nothing proves that one gone: unknown,
	// kept by prune.
	other, err := registry.Write(state, registry.Record{Domid: 3, Name: "other", Kind: "qdisk", Mode: "pass-through",
		Launcher: proc.Identity{PID: dom0.Process.Pid, StartTime: 1}, QEMUPID: dom0.Process.Pid, QEMU: qemu, Started: time.Now(),
		Argv: []string{qemu, "-xen-domid", "3", "-daemonize", "-pidfile", pidFile}})
	require.NoError(t, err)
	out, stderr = list("--json")
	entries = nil
	require.NoError(t, json.Unmarshal([]byte(out), &entries))
	require.Len(t, entries, 2)
	assert.Equal(t, registry.Unknown, entries[1].State)
	assert.Zero(t, entries[1].DaemonPID)
	assert.Empty(t, stderr)
	_, stderr = list()
	assert.Contains(t, stderr, fmt.Sprintf("domain 3: state unknown, record kept: pidfile %s is held by pid %d, whose -xen-domid is \"\", not the launch's \"3\"", pidFile, daemon))
	out3, err := exec.Command(dmctlBin, "--state-dir", state, "prune", "--dry-run").CombinedOutput()
	require.NoError(t, err, "%s", out3)
	assert.NotContains(t, string(out3), other)
	require.NoError(t, os.Remove(other))

	// A guest's QEMU, passed through, ends as at xl destroy.
	guest := exec.Command(dmlaunchBin, "-name", "guest", "-machine", "pc", "-accel", "tcg", "-display", "none", "-nodefaults", "-no-user-config")
	guest.Env = append(env, "XEN_DOMAIN_ID=7")
	require.NoError(t, guest.Start())
	exited := make(chan struct{})
	go func() { _ = guest.Wait(); close(exited) }()
	t.Cleanup(func() { _ = guest.Process.Kill(); <-exited })
	// dmlaunch records the launch before it saves the lease and execs:
	// signal QEMU, as libxl does, not dmlaunch on its way to it.
	require.Eventually(t, func() bool {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", guest.Process.Pid))
		return exe == qemu
	}, 30*time.Second, 10*time.Millisecond)
	out, _ = list()
	assert.Regexp(t, `(?m)^7\s+guest\s.*running$`, out)
	require.NoError(t, guest.Process.Signal(syscall.SIGHUP))
	<-exited

	out, stderr = list()
	assert.NotRegexp(t, `(?m)^7\s`, out, "an ended launch is left out")
	assert.NotContains(t, out+stderr, "stale")
	out, _ = list("--all")
	assert.Regexp(t, `(?m)^7\s+guest\s+unknown\s+pass-through\s+`+strconv.Itoa(guest.Process.Pid)+`\s+-\s+-\s+-\s+ended$`, out)
	assert.Regexp(t, `(?m)^0\s+dom0\s+.*running$`, out)

	doctor := exec.Command(dmctlBin, "doctor", "--json")
	doctor.Env = env
	out2, _ := doctor.Output() // other checks may fail on a machine without Xen
	var checks []Check
	require.NoError(t, json.Unmarshal(out2, &checks), "%s", out2)
	var registryCheck *Check
	for i := range checks {
		if checks[i].Name == "registry" {
			registryCheck = &checks[i]
		}
	}
	require.NotNil(t, registryCheck, "%s", out2)
	assert.True(t, registryCheck.OK)
	assert.False(t, registryCheck.Warning, "an ended launch is not damage: %s", registryCheck.Detail)
	assert.Contains(t, registryCheck.Detail, "1 records of running launches, 1 of ended pass-through launches")

	// dom0's QEMU stops (SIGTERM, as the init script's stop does): QEMU
	// removes its pidfile, and the launch has ended.
	require.NoError(t, syscall.Kill(daemon, syscall.SIGTERM))
	require.Eventually(t, daemonGone, 30*time.Second, 10*time.Millisecond)
	out, _ = list()
	assert.Equal(t, "DOMID  NAME  KIND  MODE  QEMU PID  UPTIME  GDB  CONSOLE  STATE\n", out)
	out, _ = list("--all")
	assert.Regexp(t, `(?m)^0\s+dom0\s+hvm\s+pass-through\s+`+strconv.Itoa(dom0.Process.Pid)+`\s+-\s+-\s+-\s+ended$`, out)

	// A later launch of any domain removes both ended records: a
	// pass-through one when the lease allocator's full reap is due, at
	// most every 10 s (here the lease file says the last was long ago).
	leases := filepath.Join(state, "domids")
	b, err = os.ReadFile(leases)
	require.NoError(t, err)
	due := regexp.MustCompile(`(?m)^reaped [0-9.]+$`).ReplaceAll(b, []byte("reaped 0"))
	require.NotEqual(t, string(b), string(due))
	require.NoError(t, os.WriteFile(leases, due, 0o600))
	next := exec.Command(dmlaunchBin, "-xen-domid", "5", "-machine", "xenfv")
	next.Env = append(env[:len(env):len(env)], "DMLAUNCH_QEMU=/bin/true")
	out3, err = next.CombinedOutput()
	require.NoError(t, err, "%s", out3)
	names, err := filepath.Glob(filepath.Join(state, "*.json"))
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(state, "5.json")}, names)
	out, _ = list("--all")
	assert.Regexp(t, `(?m)^5\s+-\s+hvm\s+pass-through\s+\d+\s+-\s+-\s+-\s+ended$`, out)

	prune := exec.Command(dmctlBin, "--state-dir", state, "prune")
	out3, err = prune.CombinedOutput()
	require.NoError(t, err, "%s", out3)
	assert.Contains(t, string(out3), "removed "+filepath.Join(state, "5.json")+": domain 5 (-), ended, its QEMU (pid")
	assert.NoFileExists(t, filepath.Join(state, "5.json"))
}
