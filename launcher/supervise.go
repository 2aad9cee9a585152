package launcher

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"golang.org/x/sys/unix"
)

// GracePeriod is how long QEMU has to shut down after the toolstack's
// signal before it is killed.
const GracePeriod = 10 * time.Second

// ToolstackStartTimeout is libxl's LIBXL_DEVICE_MODEL_START_TIMEOUT: a
// QEMU that has not reported "running" by then gets its domain destroyed.
const ToolstackStartTimeout = 60 * time.Second

func (p *Plan) hasMode(m string) bool {
	for _, x := range p.Config.Debug {
		if x == m {
			return true
		}
	}
	return false
}

// ConsoleLogPath is where a domain's console bytes are kept.
func ConsoleLogPath(logDir string, domid int) string {
	return filepath.Join(logDir, "dmlaunch-console-"+strconv.Itoa(domid)+".log")
}

// QMPSocketPath is the launcher's own QMP socket for a domain.
func QMPSocketPath(stateDir string, domid int) string {
	return filepath.Join(stateDir, strconv.Itoa(domid)+".qmp")
}

// child is QEMU, started and waited for on one locked OS thread: the
// kernel sends PR_SET_PDEATHSIG when the thread that forked the child
// exits, and the Go runtime retires threads at will (golang/go#27505).
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	status syscall.WaitStatus
	err    error
}

func startChild(cmd *exec.Cmd, stopAtExec bool) (*child, error) {
	c := &child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine ends, after the child is
		// reaped, its thread goes with it.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		if stopAtExec {
			started <- stopBeforeFirstInstruction(cmd.Process.Pid)
		} else {
			started <- nil
		}
		c.err = cmd.Wait()
		if cmd.ProcessState != nil {
			c.status = cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
		close(c.done)
	}()
	return c, <-started
}

// stopBeforeFirstInstruction turns the exec-time ptrace stop of a child
// started with PTRACE_TRACEME into a plain SIGSTOP stop without a tracer,
// so that gdbserver can attach and find QEMU before its first instruction.
// Must run on the thread that started the child: it is the tracer.
func stopBeforeFirstInstruction(pid int) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for QEMU's exec: %w", err)
		}
		break
	}
	if !ws.Stopped() {
		return fmt.Errorf("QEMU did not stop at exec (status %v)", ws)
	}
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, uintptr(unix.SIGSTOP), 0, 0)
	if errno != 0 {
		return fmt.Errorf("leave QEMU stopped: %w", errno)
	}
	return nil
}

func (c *child) exitStatus() int {
	switch {
	case c.status.Exited():
		return c.status.ExitStatus()
	case c.status.Signaled():
		return 128 + int(c.status.Signal())
	}
	return ExitInternal
}

// Supervise runs QEMU as the launcher's child in the debug modes and
// returns the launcher's exit status: QEMU's, or 128+signal.
func (p *Plan) Supervise(in Inputs, stderr *os.File) (int, error) {
	// Handlers first: a signal between QEMU's start and here would
	// otherwise kill the launcher and, through pdeathsig, QEMU unasked.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	self, err := proc.Self()
	if err != nil {
		return 0, err
	}
	lease, err := p.takeLease(self)
	if err != nil {
		return 0, err
	}
	defer func() { _ = p.allocator().Release(lease.Domid, self) }()

	wantGDB := p.hasMode(ModeGDB) || p.hasMode(ModeGDBWait)
	var listener *net.TCPListener
	var gdbAddr string
	if wantGDB {
		addr, err := gdbwrap.Address(p.Config.GDBListen, p.Domid)
		if err != nil {
			return 0, err
		}
		if listener, err = gdbwrap.Listen(addr); err != nil {
			return 0, err
		}
		defer listener.Close()
		gdbAddr = addr.String()
	}

	if err := os.MkdirAll(p.Config.LogDir, 0o755); err != nil {
		return 0, fmt.Errorf("console log directory: %w", err)
	}
	cons, err := console.Open(ConsoleLogPath(p.Config.LogDir, p.Domid))
	if err != nil {
		return 0, fmt.Errorf("console: %w", err)
	}
	defer cons.Close()

	qmp := QMPSocketPath(p.Config.StateDir, p.Domid)
	if err := statedir.Ensure(p.Config.StateDir); err != nil {
		return 0, err
	}
	_ = os.Remove(qmp) // a socket left by a launcher that was killed

	cl, applied, err := argv.ApplyRules(p.Line, argv.SerialToDevice(cons.QEMUPath), argv.AddQMPSocket(qmp))
	if err != nil {
		return 0, err
	}
	p.Applied = append(p.Applied, applied...)
	p.Argv = append([]string{p.QEMU}, cl.Render()...)

	cmd := exec.Command(p.QEMU, p.Argv[1:]...)
	cmd.Args[0] = p.Argv[0]
	cmd.Env = p.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, stderr
	cmd.ExtraFiles = inheritedFiles(in.InheritedFDs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Ptrace: p.hasMode(ModeGDBWait)}
	qemu, err := startChild(cmd, p.hasMode(ModeGDBWait))
	if err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		return 0, &NotExecutableError{p.QEMU, "could not be started: " + err.Error()}
	}
	pid := cmd.Process.Pid

	rec := registry.Record{
		Domid: p.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
		Launcher: self, QEMUPID: pid, QEMU: p.QEMU, Argv: p.Argv,
		GDB: gdbAddr, ConsolePTY: cons.UserPath, ConsoleLog: cons.LogPath, QMP: qmp,
		Started: time.Now().UTC(),
	}
	if _, err := registry.Write(p.Config.StateDir, rec); err != nil {
		fmt.Fprintf(stderr, "dmlaunch: %s: registry record not written: %v\n", p.Subject(), err)
	}
	defer func() { _ = registry.Remove(p.Config.StateDir, rec) }()

	fmt.Fprintln(stderr, p.debugLogLine(pid, gdbAddr, cons, qmp))
	if p.hasMode(ModeGDBWait) {
		fmt.Fprintf(stderr, "dmlaunch: %s: QEMU (pid %d) is stopped before its first instruction, waiting for a debugger; "+
			"the toolstack destroys the domain if QEMU has not started within %v\n", p.Subject(), pid, ToolstackStartTimeout)
	}
	if p.PTYSerial {
		p.publishConsole(stderr, cons.UserPath)
	}

	var server *gdbwrap.Server
	if wantGDB {
		server = &gdbwrap.Server{
			Listener: listener, GDBServer: p.Config.GDBServer, PID: pid, Allow: p.Config.GDBAllow, Stderr: stderr,
			Logf: func(format string, a ...any) {
				fmt.Fprintf(stderr, "dmlaunch: %s: %s\n", p.Subject(), fmt.Sprintf(format, a...))
			},
			// A debugger that leaves QEMU stopped (gdb-wait, or a
			// disconnect mid-stop) must not leave the domain frozen.
			AfterSession: func() { _ = syscall.Kill(pid, syscall.SIGCONT) },
		}
		if p.hasMode(ModeGDBWait) {
			var once sync.Once
			server.Attached = func(gdbserverPID int) {
				once.Do(func() { releaseJobStop(pid, gdbserverPID) })
			}
		}
		go server.Serve()
	}

	stopDebugger := func(grace time.Duration) {
		if server != nil {
			server.Shutdown(grace)
			server = nil
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	var killTimer <-chan time.Time
	for waiting := true; waiting; {
		select {
		case <-qemu.done:
			waiting = false
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			if killTimer != nil { // a second signal: no more grace
				fmt.Fprintf(stderr, "dmlaunch: %s: %v again: killing QEMU\n", p.Subject(), s)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				continue
			}
			fmt.Fprintf(stderr, "dmlaunch: %s: %v: stopping QEMU (pid %d), SIGKILL in %v\n", p.Subject(), s, pid, GracePeriod)
			stopDebugger(0)
			_ = syscall.Kill(pid, s)
			killTimer = time.After(GracePeriod)
		case <-killTimer:
			fmt.Fprintf(stderr, "dmlaunch: %s: QEMU did not stop within %v: SIGKILL\n", p.Subject(), GracePeriod)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// QEMU is gone; gdbserver still has to tell gdb how it ended.
	stopDebugger(5 * time.Second)
	cons.Drain()
	status := qemu.exitStatus()
	fmt.Fprintf(stderr, "dmlaunch: %s: QEMU (pid %d) %s; %d console bytes in %s\n", p.Subject(), pid, describeStatus(qemu.status), cons.Logged(), cons.LogPath)
	return status, nil
}

// releaseJobStop ends the SIGSTOP that held QEMU before its first
// instruction, once gdbserver holds it in a ptrace stop instead: SIGCONT
// then discards the stop signals still pending, which gdb would otherwise
// report again and again, and leaves QEMU where it was. gdb reports the
// SIGCONT once ("handle SIGCONT nostop noprint" hides it).
func releaseJobStop(qemuPID, gdbserverPID int) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tracer, state, err := traceState(qemuPID)
		if err != nil {
			return
		}
		if tracer == gdbserverPID && state == 't' {
			_ = syscall.Kill(qemuPID, syscall.SIGCONT)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// traceState reads TracerPid and the state letter from /proc/PID/status.
func traceState(pid int) (tracer int, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			if v = strings.TrimSpace(v); v != "" {
				state = v[0]
			}
		}
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			tracer, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return tracer, state, nil
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exited with status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "was killed by " + ws.Signal().String()
	}
	return "ended"
}

func (p *Plan) debugLogLine(pid int, gdbAddr string, cons *console.Console, qmp string) string {
	var parts []string
	if gdbAddr != "" {
		parts = append(parts, "gdb: target remote "+gdbAddr)
	}
	parts = append(parts, "console "+cons.UserPath, "console log "+cons.LogPath, "qmp "+qmp, "qemu pid "+strconv.Itoa(pid))
	return fmt.Sprintf("dmlaunch: %s: %s, domid from %s, debug %s; %s; %s", p.Subject(), p.Kind, p.Source, p.Mode,
		strings.Join(parts, "; "), shellquote.Join(p.Argv))
}

// publishConsole tells xl console where the serial pty is. libxl publishes
// a serial port only when QEMU reports it as a pty of its own
// (query-chardev "pty:..."); QEMU's serial port is the launcher's pty now,
// so the launcher writes the users' pty where libxl would have.
func (p *Plan) publishConsole(stderr io.Writer, path string) {
	tool, err := exec.LookPath("xenstore-write")
	if err != nil {
		fmt.Fprintf(stderr, "dmlaunch: %s: xenstore-write not found: xl console -t serial will not find %s; use dmctl console %d\n", p.Subject(), path, p.Domid)
		return
	}
	key := "/local/domain/" + strconv.Itoa(p.Domid) + "/serial/0/tty"
	if out, err := exec.Command(tool, key, path).CombinedOutput(); err != nil {
		fmt.Fprintf(stderr, "dmlaunch: %s: %s %s: %v %s\n", p.Subject(), tool, key, err, strings.TrimSpace(string(out)))
	}
}

// inheritedFiles maps the toolstack's fds to exec.Cmd.ExtraFiles, which
// numbers from 3: a QMP socket at fd 17 must reach QEMU as fd 17.
func inheritedFiles(fds []int) []*os.File {
	maxFD := 2
	for _, fd := range fds {
		maxFD = max(maxFD, fd)
	}
	if maxFD < 3 {
		return nil
	}
	out := make([]*os.File, maxFD-2)
	for _, fd := range fds {
		if fd >= 3 {
			out[fd-3] = os.NewFile(uintptr(fd), "inherited-"+strconv.Itoa(fd))
		}
	}
	return out
}

// InheritedFDs lists the fds this process was started with, beyond 0-2,
// that would survive an exec: the toolstack's, which QEMU must get.
func InheritedFDs() []int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			out = append(out, fd)
		}
	}
	return out
}
