package launcher

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// throwawayUser creates a non-root user for the test and removes it after.
func throwawayUser(t *testing.T) *user.User {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creating a user needs root")
	}
	useradd := realtest.Need(t, "useradd", "userdel")
	name := fmt.Sprintf("dmlt%d", os.Getpid()%100000)
	out, err := exec.Command(useradd[0], "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	require.NoError(t, err, "useradd: %s", out)
	t.Cleanup(func() { _ = exec.Command(useradd[1], name).Run() })
	u, err := user.Lookup(name)
	require.NoError(t, err)
	return u
}

// gdbAs runs gdb as u (expected to fail or not) and returns its output.
func gdbAs(t *testing.T, u *user.User, gdb string, cmds ...string) string {
	t.Helper()
	args := []string{"-nx", "-batch"}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gdb, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/", "DEBUGINFOD_URLS="}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func TestDebugPortServesOnlyAllowedUsers(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	stranger := throwawayUser(t)
	disk := bootImage(t, guest.Options{Message: "x\r\n", Spin: true})

	t.Run("loopback TCP", func(t *testing.T) {
		s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("access", disk))
		rec := s.record(t)
		out := gdbAs(t, stranger, gdb, "target remote "+rec.GDB, "call (int)getpid()")
		t.Logf("gdb as %s:\n%s", stranger.Username, out)
		assert.Contains(t, out, "Remote failure reply: E.dmlaunch refused this debugger: uid "+stranger.Uid+" is neither root nor in DMLAUNCH_GDB_USERS")
		assert.NotContains(t, out, "Connection reset by peer")
		s.waitLog(t, "debug port: refused 127.0.0.1:")
		s.waitLog(t, "(uid "+stranger.Uid+"): uid "+stranger.Uid+" is neither root nor in DMLAUNCH_GDB_USERS")
		tracer, _ := procStatus(t, rec.QEMUPID)
		assert.Zero(t, tracer, "no gdbserver for the refused user")

		out = gdbBatch(t, gdb, "target remote "+rec.GDB, "info inferiors", "detach")
		assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID), "root's gdb attaches")
	})

	t.Run("unix socket", func(t *testing.T) {
		s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb", "DMLAUNCH_GDB_LISTEN=unix"}, guestArgs("access", disk))
		rec := s.record(t)
		sock := gdbwrap.UnixSocketPath(s.state, 5)
		assert.Equal(t, gdbwrap.UnixTarget(sock), rec.GDB)
		fi, err := os.Stat(sock)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the socket is root's alone")
		// Loosen every mode on the way, as a careless operator might: the
		// kernel's word on the peer (SO_PEERCRED) still refuses.
		for dir := s.state; dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
			require.NoError(t, os.Chmod(dir, 0o755))
		}
		require.NoError(t, os.Chmod(sock, 0o666))
		out := gdbAs(t, stranger, gdb, "target remote "+rec.GDB)
		t.Logf("gdb as %s:\n%s", stranger.Username, out)
		assert.Contains(t, out, "Remote failure reply: E.dmlaunch refused this debugger: uid "+stranger.Uid)
		s.waitLog(t, "debug port: refused unix (uid "+stranger.Uid+")")
		tracer, _ := procStatus(t, rec.QEMUPID)
		assert.Zero(t, tracer)

		out = gdbBatch(t, gdb, "target remote "+rec.GDB, "info inferiors", "detach")
		assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID), "root's gdb attaches through the socket")
	})

	t.Run("listed in DMLAUNCH_GDB_USERS", func(t *testing.T) {
		s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb", "DMLAUNCH_GDB_USERS=nobody," + stranger.Username}, guestArgs("access", disk))
		rec := s.record(t)
		out := gdbAs(t, stranger, gdb, "target remote "+rec.GDB, "info inferiors", "detach")
		assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID), "the listed user's gdb attaches")
		s.waitLog(t, fmt.Sprintf("(uid %s) attached", stranger.Uid))
	})
}

// cpuWatch samples QEMU while clients come and go: it must keep running
// (CPU time growing) and never be traced.
type cpuWatch struct {
	pid    int
	traced chan int
	stop   chan struct{}
}

func watchQEMU(t *testing.T, pid int) *cpuWatch {
	w := &cpuWatch{pid: pid, traced: make(chan int, 1), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if tracer, _, err := gdbwrap.TraceState(pid); err == nil && tracer != 0 {
				select {
				case w.traced <- tracer:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { close(w.stop) })
	return w
}

func (w *cpuWatch) assertUntraced(t *testing.T) {
	t.Helper()
	select {
	case tracer := <-w.traced:
		t.Errorf("QEMU was traced by pid %d", tracer)
	default:
	}
}

func TestClientsThatAreNotDebuggersNeverStopQEMU(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	disk := bootImage(t, guest.Options{Message: "spinning\r\n", Spin: true})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("scanned", disk))
	rec := s.record(t)
	w := watchQEMU(t, rec.QEMUPID)

	// A client that connects and says nothing, held open 5 s.
	before := cpuTicks(t, rec.QEMUPID)
	silent, err := net.Dial("tcp", rec.GDB)
	require.NoError(t, err)
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(silent)
	assert.NoError(t, err, "the launcher closes a silent client's connection")
	silent.Close()
	after := cpuTicks(t, rec.QEMUPID)
	assert.Greater(t, after, before+10, "QEMU ran (>0.1 s of CPU on a shared machine) while the silent client was connected")
	s.waitLog(t, "it sent nothing within 3s")

	// An HTTP request.
	before = cpuTicks(t, rec.QEMUPID)
	httpc, err := net.Dial("tcp", rec.GDB)
	require.NoError(t, err)
	_, err = httpc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	_ = httpc.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, _ := io.ReadAll(httpc)
	httpc.Close()
	assert.Empty(t, reply, "an HTTP client gets nothing")
	s.waitLog(t, `not a debugger: its first bytes are not a remote-protocol packet (it sent "GET / HTTP/1.1\r\n")`)

	// 200 garbage connections.
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", rec.GDB)
		require.NoError(t, err)
		_, _ = c.Write([]byte{byte(i), 0xff, '$', '#', byte(i * 7)})
		c.Close()
	}
	require.Eventually(t, func() bool { return cpuTicks(t, rec.QEMUPID) > before+20 }, 10*time.Second, 20*time.Millisecond,
		"QEMU keeps running through the garbage")
	w.assertUntraced(t)

	// A real gdb attaches afterwards.
	out := gdbBatch(t, gdb, "target remote "+rec.GDB, "info inferiors", "detach")
	assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID))
}

// holdVariants are the ways gdb-wait can hold QEMU, each forced by hiding
// the other hierarchies in a mount namespace.
func holdVariants(t *testing.T) []struct {
	name, method string
	wrap         []string
} {
	hide := func(dirs ...string) []string {
		script := ""
		for _, d := range dirs {
			script += "mount -t tmpfs -o ro none " + d + " && "
		}
		return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script + `exec "$@"`, "sh"}
	}
	var out []struct {
		name, method string
		wrap         []string
	}
	v2, v1 := hasCgroup(2), hasCgroup(1)
	if v2 != "" {
		out = append(out, struct {
			name, method string
			wrap         []string
		}{"v2", gdbwrap.HoldCgroupV2, nil})
	}
	if v1 != "" {
		var wrap []string
		if v2 != "" {
			wrap = hide(v2)
		}
		out = append(out, struct {
			name, method string
			wrap         []string
		}{"v1", gdbwrap.HoldCgroupV1, wrap})
	}
	var hidden []string
	for _, d := range []string{v2, v1} {
		if d != "" {
			hidden = append(hidden, d)
		}
	}
	out = append(out, struct {
		name, method string
		wrap         []string
	}{"no freezer", gdbwrap.HoldJobStop, hide(hidden...)})
	if len(hidden) > 0 {
		realtest.Need(t, "unshare")
	}
	return out
}

// hasCgroup is the mount point of the v2 hierarchy or the v1 freezer, or
// "" when there is none.
func hasCgroup(version int) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		a, f := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(f) < 3 {
			continue
		}
		if version == 2 && f[0] == "cgroup2" || version == 1 && f[0] == "cgroup" && strings.Contains(","+f[2]+",", ",freezer,") {
			return a[4]
		}
	}
	return ""
}

func TestGDBWaitStopsAtMainForAPlainGDB(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	disk := bootImage(t, guest.Options{Message: "held\r\n", Exit: true, ExitStatus: 4})
	for _, v := range holdVariants(t) {
		t.Run(v.name, func(t *testing.T) {
			s := startSupervisedIn(t, v.wrap, qemu, []string{"DMLAUNCH_DEBUG=gdb-wait"}, guestArgs("held", disk))
			s.waitLog(t, "stopped before its first instruction ("+v.method+")")
			rec := s.record(t)
			cmds := []string{"target remote " + rec.GDB, "info symbol $pc", "break main", "continue", "info symbol $pc", "continue"}
			if v.method == gdbwrap.HoldJobStop {
				s.waitLog(t, "no cgroup freezer could hold QEMU")
				// The fallback's documented cost: gdb reports the SIGCONT
				// that ends the job-control stop, once.
				cmds = []string{"target remote " + rec.GDB, "info symbol $pc", "break main", "continue", "continue", "info symbol $pc", "continue"}
			} else {
				assertHeld(t, rec.QEMUPID)
			}
			out := gdbBatch(t, gdb, cmds...)
			if v.method == gdbwrap.HoldJobStop {
				assert.Equal(t, 1, strings.Count(out, "received signal"), "%s", out)
			} else {
				assert.NotContains(t, out, "received signal")
			}
			assert.Contains(t, out, "_start in section .text", "gdb finds QEMU at its first instruction")
			assert.Contains(t, out, "Breakpoint 1, ")
			assert.Contains(t, out, "main in section .text")
			assert.Equal(t, guest.ExitStatus(4), s.wait(t, 60*time.Second), "QEMU's exit status comes out of the launcher")
			assertNoHoldLeft(t, rec.QEMUPID)
		})
	}
}

// assertNoHoldLeft checks that no hold cgroup or guard is left for pid.
func assertNoHoldLeft(t *testing.T, pid int) {
	t.Helper()
	name := "dmlaunch-hold-" + strconv.Itoa(pid)
	require.Eventually(t, func() bool {
		for _, v := range []int{1, 2} {
			if root := hasCgroup(v); root != "" {
				found, _ := filepath.Glob(filepath.Join(root, "*", name))
				if _, err := os.Stat(filepath.Join(root, name)); err == nil || len(found) > 0 {
					return false
				}
			}
		}
		return len(guards(pid)) == 0
	}, 10*time.Second, 10*time.Millisecond, "hold cgroup %s or its guard left behind", name)
}

// guards lists the hold guards running for pid.
func guards(pid int) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(args) == 5 && args[0] == gdbwrap.HoldGuardName && args[4] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

func TestSIGKILLWhileHeldLeavesNothing(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	disk := bootImage(t, guest.Options{Message: "x\r\n"})
	for _, v := range holdVariants(t) {
		if v.method == gdbwrap.HoldJobStop {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			s := startSupervisedIn(t, v.wrap, qemu, []string{"DMLAUNCH_DEBUG=gdb-wait"}, guestArgs("killed", disk))
			s.waitLog(t, "("+v.method+")")
			rec := s.record(t)
			assertHeld(t, rec.QEMUPID)
			require.Len(t, guards(rec.QEMUPID), 1, "a guard watches the hold")
			require.NoError(t, s.cmd.Process.Kill())
			require.Eventually(t, func() bool { return !alive(rec.QEMUPID) }, 10*time.Second, 5*time.Millisecond, "QEMU gone")
			assertNoHoldLeft(t, rec.QEMUPID)
		})
	}
}

func TestSIGQUITStopsQEMULikeSIGTERM(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver")
	disk := bootImage(t, guest.Options{Message: "guest up\r\n"})
	s := startSupervised(t, paths[0], []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("quit", disk))
	rec := s.record(t)
	waitConsole(t, rec.ConsoleLog, "guest up") // QEMU runs, its signal handlers set
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGQUIT))
	assert.Equal(t, 0, s.wait(t, 30*time.Second), "QEMU ended by SIGTERM exits 0, and so does the launcher")
	assert.False(t, alive(rec.QEMUPID))
	assert.Contains(t, s.stderr.String(), "quit: stopping QEMU (pid "+strconv.Itoa(rec.QEMUPID)+") with terminated")
	assert.NotContains(t, s.stderr.String(), "goroutine ", "no goroutine dump in the toolstack's log")
	_, err := os.Stat(rec.Path)
	assert.True(t, os.IsNotExist(err), "record removed")
	b, err := os.ReadFile(filepath.Join(s.state, domid.LeaseFile))
	require.NoError(t, err)
	assert.NotRegexp(t, `(?m)^lease `, string(b), "lease released")
	assert.Regexp(t, `(?m)^released 5 `, string(b))
}

func TestNoSignalAfterQEMUIsReaped(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "strace")
	qemu, strace := paths[0], paths[1]
	disk := bootImage(t, guest.Options{Message: "guest up\r\n"})
	log := filepath.Join(t.TempDir(), "strace.log")
	// strace follows QEMU too, so no debugger can attach here: this is
	// the launch and the toolstack's stop, where stray signals were sent.
	// --seccomp-bpf stops the traced processes at the listed calls only,
	// so tracing does not slow QEMU's start on a loaded machine.
	wrap := []string{strace, "-f", "--seccomp-bpf", "-qq", "-o", log, "-e", "trace=kill,tgkill,tkill,pidfd_send_signal,wait4,waitid", "-e", "signal=none"}
	s := startSupervisedIn(t, wrap, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("traced", disk))
	rec := s.record(t)
	waitConsole(t, rec.ConsoleLog, "guest up")
	require.NoError(t, syscall.Kill(rec.Launcher.PID, syscall.SIGTERM))
	s.wait(t, 60*time.Second)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	reaped := -1
	for i, l := range lines {
		isReap := strings.Contains(l, fmt.Sprintf("si_pid=%d,", rec.QEMUPID)) && strings.Contains(l, "CLD_") && !strings.Contains(l, "WNOWAIT") ||
			regexp.MustCompile(fmt.Sprintf(`wait4\(%d,.*\) = %d$`, rec.QEMUPID, rec.QEMUPID)).MatchString(l)
		if isReap {
			reaped = i
		}
	}
	require.GreaterOrEqual(t, reaped, 0, "QEMU's reap is in the trace:\n%s", b)
	t.Logf("QEMU reaped: %s", lines[reaped])
	signal := regexp.MustCompile(`(kill|tgkill|tkill|pidfd_send_signal)\(`)
	for _, l := range lines[reaped+1:] {
		if signal.MatchString(l) && !strings.Contains(l, "SIGURG") { // SIGURG: the Go runtime's own preemption
			t.Errorf("a signal after QEMU's reap: %s", l)
		}
	}
	assert.Regexp(t, `pidfd_send_signal\(\d+, SIGTERM`, string(b), "QEMU is signalled through a pidfd")
	assert.NotRegexp(t, `kill\(`+strconv.Itoa(rec.QEMUPID)+`,`, string(b), "never by its bare pid")
}

// waitConsole waits for the guest's text in the console log.
func waitConsole(t *testing.T, path, text string) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), text)
	}, 60*time.Second, 10*time.Millisecond, "waiting for %q in %s", text, path)
}

func TestGDBWaitReleasesToGDBByPID(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdb")
	qemu, gdb := paths[0], paths[1]
	disk := bootImage(t, guest.Options{Message: "held\r\n", Exit: true, ExitStatus: 2})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb-wait"}, guestArgs("held", disk))
	s.waitLog(t, "stopped before its first instruction")
	rec := s.record(t)
	out := gdbBatch(t, gdb, "attach "+strconv.Itoa(rec.QEMUPID), "info symbol $pc", "break main", "continue", "info symbol $pc", "continue")
	assert.NotContains(t, out, "received signal")
	assert.Contains(t, out, "_start in section .text", "gdb -p finds QEMU at its first instruction")
	assert.Contains(t, out, "main in section .text")
	assert.Equal(t, guest.ExitStatus(2), s.wait(t, 60*time.Second))
	assertNoHoldLeft(t, rec.QEMUPID)
}

// netnsPeer makes a network namespace joined to this one by a veth pair:
// this side has 198.51.100.1/24 and 203.0.113.1/24, the namespace .2 of
// each. It returns the namespace's name.
func netnsPeer(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ipCmd := realtest.Need(t, "ip")[0]
	ns := fmt.Sprintf("dmlt%d", os.Getpid()%100000)
	host, peer := ns+"a", ns+"b"
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(ipCmd, args...).CombinedOutput()
		require.NoError(t, err, "ip %q: %s", args, out)
	}
	run("netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command(ipCmd, "link", "del", host).Run()
		_ = exec.Command(ipCmd, "netns", "del", ns).Run()
	})
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	run("link", "set", peer, "netns", ns)
	run("addr", "add", "198.51.100.1/24", "dev", host)
	run("addr", "add", "203.0.113.1/24", "dev", host)
	run("link", "set", host, "up")
	run("-n", ns, "addr", "add", "198.51.100.2/24", "dev", peer)
	run("-n", ns, "addr", "add", "203.0.113.2/24", "dev", peer)
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")
	// The link takes a moment to carry traffic: until then a connection
	// fails with "No route to host" rather than reaching this side (where
	// nothing listens on port 9).
	for _, addr := range []string{"198.51.100.1", "203.0.113.1"} {
		require.Eventually(t, func() bool {
			out, _ := exec.Command(ipCmd, "netns", "exec", ns, "bash", "-c", "exec 3<>/dev/tcp/"+addr+"/9").CombinedOutput()
			return strings.Contains(string(out), "Connection refused")
		}, 20*time.Second, 100*time.Millisecond, "%s reachable from the namespace", addr)
	}
	return ns
}

func TestRemotePeersServedByNetwork(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb", "ip")
	qemu, gdb, ipCmd := paths[0], paths[2], paths[3]
	ns := netnsPeer(t)
	disk := bootImage(t, guest.Options{Message: "x\r\n", Spin: true})
	// A dual-stack listener: IPv4 peers arrive as ::ffff:a.b.c.d.
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb", fmt.Sprintf("DMLAUNCH_GDB_LISTEN=[::]:%d", s0port(t)), "DMLAUNCH_GDB_ALLOW=198.51.100.0/24"},
		guestArgs("remote", disk))
	rec := s.record(t)
	_, port, _ := net.SplitHostPort(rec.GDB)
	remoteGDB := func(addr string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, ipCmd, "netns", "exec", ns, gdb, "-nx", "-batch", "-ex", "target remote "+addr+":"+port, "-ex", "info inferiors", "-ex", "detach")
		cmd.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	out := remoteGDB("198.51.100.1")
	assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID), "a peer on the allowed network attaches:\n%s", out)
	s.waitLog(t, "debugger 198.51.100.2:")
	s.waitLog(t, "(remote) attached")

	out = remoteGDB("203.0.113.1")
	assert.Contains(t, out, "Remote failure reply: E.dmlaunch refused this debugger: not in DMLAUNCH_GDB_ALLOW")
	s.waitLog(t, "refused 203.0.113.2:")
	tracer, _ := procStatus(t, rec.QEMUPID)
	assert.Zero(t, tracer)

	// gdb on the host itself is a local peer, served by uid.
	out = gdbBatch(t, gdb, "target remote 127.0.0.1:"+port, "info inferiors", "detach")
	assert.Contains(t, out, fmt.Sprintf("process %d", rec.QEMUPID))
}

// s0port is a free base port for domid 5 on every address.
func s0port(t *testing.T) int {
	l, err := net.Listen("tcp", "[::]:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port - 5
}
