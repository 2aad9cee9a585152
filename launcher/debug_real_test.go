package launcher

import (
	"bytes"
	"context"
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

	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func bootImage(t *testing.T, o guest.Options) string {
	img, err := guest.BootSector(o)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "boot.img")
	require.NoError(t, os.WriteFile(path, img, 0o644))
	return path
}

// guestArgs is a toolstack-like command line for the TCG QEMU (which
// refuses -xen-domid; the domid comes as XEN_DOMAIN_ID, as libxl sets it).
func guestArgs(name, disk string) []string {
	return append([]string{"-name", name, "-machine", "pc", "-accel", "tcg", "-display", "none",
		"-nodefaults", "-no-user-config", "-serial", "pty", "-drive", "file=" + disk + ",format=raw,if=floppy"},
		guest.QEMUArgs()...)
}

func gdbBatch(t *testing.T, gdb string, cmds ...string) string {
	t.Helper()
	var args []string
	args = append(args, "-nx", "-batch")
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gdb, args...)
	cmd.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "gdb %q:\n%s", cmds, out)
	return string(out)
}

// procStatus reads TracerPid and the state letter.
func procStatus(t *testing.T, pid int) (tracer int, state byte) {
	tracer, state, err := gdbwrap.TraceState(pid)
	require.NoError(t, err)
	return tracer, state
}

// gdbBatchErr runs gdb that is expected to fail, and returns its output.
func gdbBatchErr(t *testing.T, gdb string, cmds ...string) string {
	t.Helper()
	args := []string{"-nx", "-batch"}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gdb, args...)
	cmd.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// packet frames a remote-protocol packet.
func packet(data string) string {
	var sum byte
	for _, c := range []byte(data) {
		sum += c
	}
	return fmt.Sprintf("$%s#%02x", data, sum)
}

// dialGDB connects as gdb does: its first packet is what makes the
// launcher start gdbserver.
func dialGDB(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	require.NoError(t, err)
	_, err = c.Write([]byte("+" + packet("qSupported:multiprocess+")))
	require.NoError(t, err)
	return c
}

// assertHeld checks that pid waits before its first instruction: frozen
// (no CPU time used while watched), untraced.
func assertHeld(t *testing.T, pid int) {
	t.Helper()
	tracer, _ := procStatus(t, pid)
	assert.Zero(t, tracer, "held untraced")
	before := cpuTicks(t, pid)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, before, cpuTicks(t, pid), "a held QEMU runs nothing")
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	require.NoError(t, err)
	assert.Contains(t, string(cg), "dmlaunch-hold-", "QEMU is in its hold cgroup")
}

// cpuTicks is utime+stime of pid, in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return u + st
}

// listenerOwners finds the pids holding a listening TCP socket on port.
func listenerOwners(t *testing.T, port int) []int {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, p, _ := strings.Cut(f[1], ":")
			if n, _ := strconv.ParseInt(p, 16, 32); int(n) == port {
				inodes[f[9]] = true
			}
		}
	}
	require.NotEmpty(t, inodes, "nothing listens on port %d", port)
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, pd := range procs {
		pid, err := strconv.Atoi(pd.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if m := regexp.MustCompile(`^socket:\[(\d+)\]$`).FindStringSubmatch(target); m != nil && inodes[m[1]] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func TestGDBAttachModeWithRealQEMU(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	const line = "debug guest console line"
	disk := bootImage(t, guest.Options{Message: line + "\r\n"}) // halts: runs until stopped
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("gdb guest", disk))
	target := fmt.Sprintf("127.0.0.1:%d", s.port)
	s.waitLog(t, "gdb: target remote "+target)
	rec := s.record(t)
	assert.Equal(t, target, rec.GDB)
	assert.Equal(t, s.cmd.Process.Pid, rec.Launcher.PID)
	assert.Regexp(t, `^/dev/pts/\d+$`, rec.ConsolePTY)

	// The guest's line is in the console log before any debugger came.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(rec.ConsoleLog)
		return strings.Contains(string(b), line)
	}, 30*time.Second, 20*time.Millisecond)

	// Nobody but the launcher listens on the debug port.
	assert.Equal(t, []int{s.cmd.Process.Pid}, listenerOwners(t, s.port))

	for round := 1; round <= 2; round++ {
		out := gdbBatch(t, gdb, "target remote "+target, "info inferiors", "info threads", "detach")
		assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID), "round %d: gdb is inside the QEMU the registry names", round)
		assert.GreaterOrEqual(t, strings.Count(out, fmt.Sprintf("Thread %d.", rec.QEMUPID)), 2, "round %d: QEMU's threads are visible", round)
		assert.Contains(t, out, "detached")
		// gdb is gone before gdbserver is reaped: the port is free again
		// once the launcher says the debugger left, this round's time.
		s.waitLogCount(t, "left (gdbserver: exit 0)", round)
		require.Eventually(t, func() bool {
			tracer, state := procStatus(t, rec.QEMUPID)
			return tracer == 0 && state != 't' && state != 'T'
		}, 10*time.Second, 10*time.Millisecond, "round %d: QEMU runs on untraced after detach", round)
	}

	// One debugger at a time: a second debugger is refused, with a reply
	// gdb prints, while the first is attached.
	first := dialGDB(t, "tcp", target)
	// gdbserver attaches to every QEMU thread: slow on a loaded machine.
	require.Eventually(t, func() bool { tracer, _ := procStatus(t, rec.QEMUPID); return tracer != 0 }, 60*time.Second, 10*time.Millisecond)
	out := gdbBatchErr(t, gdb, "target remote "+target)
	assert.Contains(t, out, "Remote failure reply: E.dmlaunch: a debugger is already attached to this domain")
	assert.NotContains(t, out, "Connection reset by peer")
	s.waitLog(t, "a debugger is already attached")
	first.Close()
	require.Eventually(t, func() bool { tracer, _ := procStatus(t, rec.QEMUPID); return tracer == 0 }, 30*time.Second, 10*time.Millisecond)
	s.waitLogCount(t, "left (gdbserver: ", 3)

	// The guest still runs, and QEMU serves the launcher's QMP socket.
	_, state := procStatus(t, rec.QEMUPID)
	assert.NotEqual(t, byte('T'), state)
	fi, err := os.Stat(rec.QMP)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket, fi.Mode().Type())

	// The toolstack destroys the domain: SIGHUP, with a debugger attached.
	attached := dialGDB(t, "tcp", target)
	defer attached.Close()
	var gdbserverPID int
	require.Eventually(t, func() bool { gdbserverPID, _ = procStatus(t, rec.QEMUPID); return gdbserverPID != 0 }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	status := s.wait(t, 30*time.Second)
	assert.Equal(t, 0, status, "QEMU shuts down cleanly on SIGHUP and its status is the launcher's")
	assert.False(t, alive(rec.QEMUPID), "QEMU gone")
	assert.False(t, alive(gdbserverPID), "gdbserver gone")
	_, err = os.Stat(rec.Path)
	assert.True(t, os.IsNotExist(err), "registry record removed")
}

func TestGDBWaitModeWithRealQEMU(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	const line = "started under the debugger"
	disk := bootImage(t, guest.Options{Message: line + "\r\n", Exit: true, ExitStatus: 3})
	name := `wait 'guest' "quoted" $(not run) ; & *`
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb-wait"}, guestArgs(name, disk))
	target := fmt.Sprintf("127.0.0.1:%d", s.port)
	s.waitLog(t, "stopped before its first instruction")
	assert.Contains(t, s.stderr.String(), "destroys the domain if QEMU has not started within 1m0s")
	rec := s.record(t)
	assertHeld(t, rec.QEMUPID)

	// Every argument reaches QEMU unchanged.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.QEMUPID))
	require.NoError(t, err)
	assert.Equal(t, rec.Argv, strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00"))
	assert.Contains(t, rec.Argv, name)

	out := gdbBatch(t, gdb, "target remote "+target, "info symbol $pc", "break main", "continue", "info symbol $pc", "continue")
	assert.NotContains(t, out, "received signal", "a plain gdb sees no signal it did not cause")
	assert.Contains(t, out, "_start in section .text", "gdb finds QEMU at its first instruction")
	assert.Contains(t, out, "Breakpoint 1, ")
	assert.Contains(t, out, "main in section .text")
	assert.Contains(t, out, "exited with code 07", "gdb sees the guest end QEMU")
	assert.Equal(t, guest.ExitStatus(3), s.wait(t, 60*time.Second), "QEMU's exit status comes out of the launcher")
	b, err := os.ReadFile(rec.ConsoleLog)
	require.NoError(t, err)
	assert.Regexp(t, `^=== dmlaunch \S+: domain 5 \(wait 'guest' "quoted" \$\(not run\) ; & \*\), launcher pid \d+: console log starts ===\n`, string(b))
	assert.Equal(t, line+"\r\n", string(console.Strip(b)))
}

func TestConsoleKeepsEveryByte(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	msg := "0123456789 the quick brown fox jumps over the lazy dog 0123456789 ~!@#$%^&*()_+ ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
	const repeat = 40000 // about 4.4 MB
	disk := bootImage(t, guest.Options{Message: msg, Repeat: repeat, Exit: true, ExitStatus: 0})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=console"}, guestArgs("chatty", disk))
	rec := s.record(t)
	// The relay is the launcher: stop it for two seconds mid-stream, as a
	// loaded machine might. The guest must be held back, not lose bytes.
	waitLogSize(t, rec.ConsoleLog, 64<<10)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGSTOP))
	time.Sleep(2 * time.Second)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGCONT))
	assert.Equal(t, guest.ExitStatus(0), s.wait(t, 240*time.Second))
	b, err := os.ReadFile(rec.ConsoleLog)
	require.NoError(t, err)
	guestBytes := console.Strip(b)
	assert.Equal(t, len(msg)*repeat, len(guestBytes), "every byte is in the log, nobody having opened the pty")
	for i := 0; i < repeat; i++ {
		if chunk := guestBytes[i*len(msg) : (i+1)*len(msg)]; !bytes.Equal(chunk, []byte(msg)) {
			t.Fatalf("copy %d differs: %q", i, chunk)
		}
	}
	assert.Contains(t, s.stderr.String(), fmt.Sprintf("%d console bytes in", len(msg)*repeat))
}

func TestSIGKILLedLauncherTakesQEMUAndGDBServer(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver")
	disk := bootImage(t, guest.Options{Message: "x\r\n"})
	for _, withDebugger := range []bool{false, true} {
		t.Run(fmt.Sprintf("debugger=%v", withDebugger), func(t *testing.T) {
			s := startSupervised(t, paths[0], []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("killed", disk))
			rec := s.record(t)
			gdbserverPID := 0
			if withDebugger {
				conn := dialGDB(t, "tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
				defer conn.Close()
				require.Eventually(t, func() bool { gdbserverPID, _ = procStatus(t, rec.QEMUPID); return gdbserverPID != 0 }, 10*time.Second, 10*time.Millisecond)
			}
			require.NoError(t, s.cmd.Process.Kill())
			start := time.Now()
			require.Eventually(t, func() bool { return !alive(rec.QEMUPID) }, time.Second, 5*time.Millisecond, "QEMU gone within a second")
			t.Logf("QEMU gone %v after the launcher's SIGKILL", time.Since(start).Round(time.Millisecond))
			if withDebugger {
				require.Eventually(t, func() bool { return !alive(gdbserverPID) }, time.Second, 5*time.Millisecond, "gdbserver gone")
			}
		})
	}
}

// waitLogSize waits until the console log holds at least n bytes.
func waitLogSize(t *testing.T, path string, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(path); err == nil && fi.Size() >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never reached %d bytes", path, n)
}
