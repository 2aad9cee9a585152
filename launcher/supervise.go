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
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/coredump"
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

// ConsoleLogPath is where a domain's console bytes are kept.
func ConsoleLogPath(logDir string, domid int) string {
	return filepath.Join(logDir, "dmlaunch-console-"+strconv.Itoa(domid)+".log")
}

// QMPSocketPath is the launcher's own QMP socket for a domain.
func QMPSocketPath(stateDir string, domid int) string {
	return filepath.Join(stateDir, strconv.Itoa(domid)+".qmp")
}

// Step is one named stage of a supervised launch, in the manner of
// firecracker-go-sdk's handler lists: the launch reads as the list, and
// each stage can be read and tested alone. A step that needs undoing
// registers the undo with s.atExit; a failing step ends the launch.
type Step struct {
	Name string
	Run  func(s *supervision) error
}

// supervisedSteps is every supervised launch, in order. What a debug mode
// changes is decided inside the steps from the mode table (modes.go);
// steps that act after QEMU's exit (core dumps, say) go after "wait for
// QEMU".
var supervisedSteps = []Step{
	{"trap signals", (*supervision).trapSignals},
	{"find tools", (*supervision).findTools},
	{"take lease", (*supervision).takeLease},
	{"open debug port", (*supervision).openDebugPort},
	{"open console", (*supervision).openConsole},
	{"final argv", (*supervision).finalArgv},
	{"wrap QEMU", (*supervision).wrapQEMU},
	{"raise core limit", (*supervision).raiseCoreLimit},
	{"start QEMU", (*supervision).startQEMU},
	{"lower core limit", (*supervision).lowerCoreLimit},
	{"attach tracer", (*supervision).attachTracer},
	{"write record", (*supervision).writeRecord},
	{"announce", (*supervision).announce},
	{"announce tools", (*supervision).announceTools},
	{"serve debuggers", (*supervision).serveDebuggers},
	{"release hold on attach", (*supervision).releaseHoldOnAttach},
	{"wait for QEMU", (*supervision).waitQEMU},
	{"stop debuggers", (*supervision).stopDebuggersAfterExit},
	{"report tools", (*supervision).reportTools},
	{"keep core", (*supervision).keepCore},
	{"report exit", (*supervision).reportExit},
	{"backtrace core", (*supervision).backtraceCore},
}

// supervision is the state the steps share.
type supervision struct {
	p      *Plan
	in     Inputs
	stderr *os.File
	self   proc.Identity

	sigs      chan os.Signal
	listener  net.Listener
	gdbTarget string // the record's and the log's "target remote" value
	cons      *console.Console
	qmp       string
	qemu      *child
	hold      *gdbwrap.Hold
	server    *gdbwrap.Server
	status    int
	started   time.Time
	// record is the launch's registry record as last written (takeLease,
	// then writeRecord), to remove it at the end.
	record *registry.Record

	// coreLimit is the RLIMIT_CORE QEMU got; crash is set when QEMU died
	// of a core-dumping signal (crash.go).
	coreLimit        coredump.Limit
	restoreCoreLimit func() error
	crash            *coredump.Crash

	// The strace and memcheck modes (tools.go): the tools found, QEMU's
	// command line under its wrapper, the tool's log, the tracer.
	tools      map[string]string
	command    []string
	toolName   string
	toolLog    string
	vgdbPrefix string
	tracer     *exec.Cmd
	tracerDone chan struct{}

	toldDumping bool
	cleanups    []func()
}

// atExit registers an undo; they run in reverse order when Supervise
// returns, whatever the outcome.
func (s *supervision) atExit(f func()) { s.cleanups = append(s.cleanups, f) }

func (s *supervision) logf(format string, a ...any) {
	fmt.Fprintf(s.stderr, "dmlaunch: %s: %s\n", s.p.Subject(), fmt.Sprintf(format, a...))
}

// Supervise runs QEMU as the launcher's child in the debug modes and
// returns the launcher's exit status: QEMU's, or 128+signal.
func (p *Plan) Supervise(in Inputs, stderr *os.File) (int, error) {
	s := &supervision{p: p, in: in, stderr: stderr}
	defer func() {
		for i := len(s.cleanups) - 1; i >= 0; i-- {
			s.cleanups[i]()
		}
	}()
	for _, step := range supervisedSteps {
		if err := step.Run(s); err != nil {
			return 0, err
		}
	}
	return s.status, nil
}

// stopSignal says whether sig stops QEMU, and with which signal. The
// toolstack stops QEMU with SIGHUP (libxl) or SIGTERM; SIGINT and SIGQUIT
// come from a terminal. QEMU is sent SIGTERM for SIGQUIT: its own SIGQUIT
// action is a core dump, and the Go runtime's a goroutine dump into the
// toolstack's log. A switch, not a map: a package-level map is built at
// every start, and most starts are pass-through launches that never
// supervise.
func stopSignal(sig os.Signal) (forward syscall.Signal, ok bool) {
	switch sig {
	case syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM:
		return sig.(syscall.Signal), true
	case syscall.SIGQUIT:
		return syscall.SIGTERM, true
	}
	return 0, false
}

// ignoredSignals would end the launcher, and through pdeathsig the
// domain, though nobody asked for either: logged and ignored. SIGPIPE
// comes from a toolstack log that was closed under us.
var ignoredSignals = []os.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGPIPE}

// trapSignals comes first: a signal between QEMU's start and here would
// otherwise kill the launcher and, through pdeathsig, QEMU unasked.
func (s *supervision) trapSignals() error {
	s.sigs = make(chan os.Signal, 8)
	signal.Notify(s.sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT) // stopSignal's
	signal.Notify(s.sigs, ignoredSignals...)
	s.atExit(func() { signal.Stop(s.sigs) })
	return nil
}

// takeLease takes the domid's lease and, under the same lock, writes a
// first registry record: launcher, domid, kind and name, no QEMU pid yet.
// A lease file rebuilt from the registry while QEMU starts (it is lost or
// damaged in that window) then still finds this launch, as it finds a
// pass-through one. writeRecord completes the record once QEMU runs.
func (s *supervision) takeLease() error {
	self, err := proc.Self()
	if err != nil {
		return err
	}
	s.self = self
	p := s.p
	lease, err := p.acquire(self, func(l domid.Lease) error {
		p.sweepEnded(l.Domid)
		rec := registry.Record{
			Domid: l.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
			Launcher: self, QEMU: p.QEMU, Started: time.Now().UTC(),
		}
		if err := p.writeRecord(rec, true); err != nil {
			return err
		}
		s.record = &rec
		return nil
	})
	if err != nil {
		s.removeRecord() // written, but the lease could not be saved
		return err
	}
	s.atExit(func() { _ = p.allocator().Release(lease.Domid, self) })
	s.atExit(s.removeRecord) // before the lease goes, as undo does
	return nil
}

// removeRecord removes the launch's record, the first or the completed
// one, whichever was written last, unless a later launch replaced it.
func (s *supervision) removeRecord() {
	if s.record != nil {
		_ = registry.Remove(s.p.Config.StateDir, *s.record)
		s.record = nil
	}
}

// openDebugPort binds the port before QEMU starts, so a busy port stops
// the launch instead of leaving a domain nobody can reach.
func (s *supervision) openDebugPort() error {
	if !s.p.wants(func(m DebugMode) bool { return m.DebugPort }) {
		return nil
	}
	cfg := s.p.Config
	if cfg.GDBUnix {
		if err := statedir.Ensure(cfg.StateDir); err != nil {
			return err
		}
		path := gdbwrap.UnixSocketPath(cfg.StateDir, s.p.Domid)
		l, err := gdbwrap.ListenUnix(path)
		if err != nil {
			return err
		}
		s.listener, s.gdbTarget = l, gdbwrap.UnixTarget(path)
		s.atExit(func() { l.Close(); _ = os.Remove(path) })
		return nil
	}
	addr, err := gdbwrap.Address(cfg.GDBListen, s.p.Domid)
	if err != nil {
		return err
	}
	l, err := gdbwrap.Listen(addr)
	if err != nil {
		return err
	}
	s.listener, s.gdbTarget = l, addr.String()
	s.atExit(func() { l.Close() })
	return nil
}

func (s *supervision) openConsole() error {
	if err := os.MkdirAll(s.p.Config.LogDir, 0o755); err != nil {
		return fmt.Errorf("console log directory: %w", err)
	}
	cons, err := console.Open(ConsoleLogPath(s.p.Config.LogDir, s.p.Domid), console.Launch{
		Domid: s.p.Domid, Name: s.p.Name, LauncherPID: s.self.PID, Logf: s.logf,
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	s.cons = cons
	s.atExit(func() { cons.Close() })
	return nil
}

// finalArgv points the first serial port at the console's pty and adds
// the launcher's QMP socket.
func (s *supervision) finalArgv() error {
	p := s.p
	s.qmp = QMPSocketPath(p.Config.StateDir, p.Domid)
	if err := statedir.Ensure(p.Config.StateDir); err != nil {
		return err
	}
	_ = os.Remove(s.qmp) // a socket left by a launcher that was killed
	cl, applied, err := argv.ApplyRules(p.Line, p.debugRules(s.cons.QEMUPath)...)
	if err != nil {
		return err
	}
	p.Applied = append(p.Applied, applied...)
	p.Argv = append([]string{p.QEMU}, cl.Render()...)
	return nil
}

func (s *supervision) startQEMU() error {
	p := s.p
	hold := p.wants(func(m DebugMode) bool { return m.HoldAtStart })
	cmd := exec.Command(p.QEMU, p.Argv[1:]...)
	cmd.Args[0] = p.Argv[0]
	if s.command != nil { // QEMU under a wrapper, in the same process
		cmd = exec.Command(s.command[0], s.command[1:]...)
	}
	cmd.Env = p.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, s.stderr
	cmd.ExtraFiles = inheritedFiles(s.in.InheritedFDs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Ptrace: hold}
	s.started = time.Now()
	qemu, err := startChild(cmd, hold)
	// QEMU holds the toolstack's fds now (or never will): the launcher's
	// copies would only keep them open behind QEMU's back.
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		return p.execFailed("could not be started", err)
	}
	s.qemu, s.hold = qemu, qemu.hold
	// On a failure in a later step: QEMU must not outlive the launch.
	s.atExit(func() {
		select {
		case <-qemu.done:
		default:
			s.releaseHold()
			_ = qemu.process().Kill()
			<-qemu.done
		}
		s.releaseHold() // removes a hold cgroup that QEMU died in
	})
	return nil
}

// releaseHold lets a held QEMU go: before any signal to it, since a task
// frozen by the v1 freezer does not even die of SIGKILL.
func (s *supervision) releaseHold() {
	if s.hold == nil {
		return
	}
	if err := s.hold.Release(); err != nil {
		s.logf("releasing QEMU from its %s: %v", s.hold.Method, err)
	}
}

// writeRecord completes the record takeLease wrote, now that QEMU runs.
func (s *supervision) writeRecord() error {
	p := s.p
	rec := registry.Record{
		Domid: p.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
		Launcher: s.self, QEMUPID: s.qemu.pid(), QEMU: p.QEMU, Argv: p.Argv,
		GDB: s.gdbTarget, ConsolePTY: s.cons.UserPath, ConsoleLog: s.cons.LogPath, QMP: s.qmp,
		Started: time.Now().UTC(),
	}
	if _, err := registry.Write(p.Config.StateDir, rec); err != nil {
		s.logf("registry record not completed (dmctl list shows this launch as starting): %v", err)
		return nil
	}
	s.record = &rec
	return nil
}

func (s *supervision) announce() error {
	p := s.p
	fmt.Fprintln(s.stderr, p.debugLogLine(s.qemu.pid(), gdbwrap.LocalTarget(s.gdbTarget), s.cons, s.qmp))
	if s.hold != nil && !s.hold.Released() { // a tracer may have it already
		if s.hold.Fallback != "" {
			s.logf("no cgroup freezer could hold QEMU (%s); it waits in a job-control stop instead, and gdb reports one SIGCONT when it is released", s.hold.Fallback)
		}
		s.logf("QEMU (pid %d) is stopped before its first instruction (%s), waiting for a debugger; "+
			"the toolstack destroys the domain if QEMU has not started within %v", s.qemu.pid(), s.hold.Method, ToolstackStartTimeout)
	}
	if p.PTYSerial {
		p.publishConsole(s.stderr, s.cons.UserPath)
	}
	return nil
}

func (s *supervision) serveDebuggers() error {
	if s.listener == nil {
		return nil
	}
	cfg := s.p.Config
	s.server = &gdbwrap.Server{
		Listener: s.listener, GDBServer: cfg.GDBServer, Process: s.qemu.process(),
		Access: gdbwrap.Access{Users: cfg.GDBUsers, Allow: cfg.GDBAllow},
		Hold:   s.hold, Stderr: s.stderr, Logf: s.logf,
		Command: s.portCommand(),
	}
	go s.server.Serve()
	s.atExit(func() { s.stopDebuggers(0) })
	return nil
}

// releaseHoldOnAttach lets a debugger that attaches to the held QEMU by
// pid (gdb -p, as root on the host) have it as the port's debuggers do.
func (s *supervision) releaseHoldOnAttach() error {
	if s.hold != nil {
		go s.hold.ReleaseOnAttach(20 * time.Millisecond)
	}
	return nil
}

// stopDebuggers closes the port and ends an attached gdbserver (after
// grace, if it does not end by itself).
func (s *supervision) stopDebuggers(grace time.Duration) {
	if s.server != nil {
		s.server.Shutdown(grace)
		s.server = nil
	}
}

// waitQEMU waits for QEMU's exit, passing the toolstack's signals on.
func (s *supervision) waitQEMU() error {
	var killTimer <-chan time.Time
	stopping := false
	for {
		select {
		case <-s.qemu.done:
			return nil
		case sig := <-s.sigs:
			forward, ok := stopSignal(sig)
			if !ok {
				s.logf("%v ignored: QEMU runs on (stop it with SIGTERM or SIGHUP)", sig)
				continue
			}
			if stopping { // a second signal: no more grace
				s.logf("%v again: killing QEMU", sig)
				killTimer = s.kill()
				continue
			}
			stopping = true
			s.logf("%v: stopping QEMU (pid %d) with %v, SIGKILL in %v", sig, s.qemu.pid(), forward, GracePeriod)
			s.stopDebuggers(0)
			s.releaseHold()
			// A gdbserver ended mid-attach leaves QEMU in a job-control
			// stop (PTRACE_ATTACH's SIGSTOP), where the signal would wait
			// for the SIGKILL. SIGCONT goes first: after the forwarded
			// signal QEMU may already be gone and reaped.
			_ = s.qemu.process().Signal(syscall.SIGCONT)
			_ = s.qemu.process().Signal(forward)
			killTimer = time.After(GracePeriod)
		case <-killTimer:
			killTimer = s.kill()
			if killTimer == nil {
				s.logf("QEMU did not stop within %v: SIGKILL sent", GracePeriod)
			}
		}
	}
}

// kill sends QEMU SIGKILL, unless it is writing a core dump: SIGKILL
// would cut the dump short. It then returns a timer to try again.
func (s *supervision) kill() <-chan time.Time {
	if coredump.Dumping(s.qemu.pid()) {
		if !s.toldDumping {
			s.logf("QEMU (pid %d) is dumping core: SIGKILL waits until it is done", s.qemu.pid())
			s.toldDumping = true
		}
		return time.After(200 * time.Millisecond)
	}
	s.releaseHold()
	_ = s.qemu.process().Kill()
	return nil
}

// stopDebuggersAfterExit gives gdbserver time to tell gdb how QEMU ended.
func (s *supervision) stopDebuggersAfterExit() error {
	s.stopDebuggers(5 * time.Second)
	s.releaseHold()
	return nil
}

func (s *supervision) reportExit() error {
	s.cons.Drain()
	s.status = s.qemu.exitStatus()
	how := "QEMU (pid " + strconv.Itoa(s.qemu.pid()) + ") " + describeStatus(s.qemu.status)
	if s.crash != nil {
		how = s.crash.Summary()
	}
	s.logf("%s; %s", how, s.cons.Summary())
	return nil
}

// child is QEMU, started and waited for on one locked OS thread: the
// kernel sends PR_SET_PDEATHSIG when the thread that forked the child
// exits, and the Go runtime retires threads at will (golang/go#27505).
// It is signalled only through cmd.Process, whose pidfd never reaches a
// process that reused the pid.
type child struct {
	cmd    *exec.Cmd
	hold   *gdbwrap.Hold
	done   chan struct{}
	status syscall.WaitStatus
	err    error
}

func (c *child) process() *os.Process { return c.cmd.Process }
func (c *child) pid() int             { return c.cmd.Process.Pid }

// startChild starts cmd; with hold, cmd has SysProcAttr.Ptrace set and is
// held before its first instruction (see gdbwrap.Hold).
func startChild(cmd *exec.Cmd, hold bool) (*child, error) {
	c := &child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine ends, after the child is
		// reaped, its thread goes with it.
		runtime.LockOSThread()
		defer close(c.done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		if hold {
			h, err := gdbwrap.HoldAtExec(cmd.Process, gdbwrap.HoldOptions{})
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				started <- err
				return
			}
			c.hold = h
		}
		started <- nil
		c.err = cmd.Wait()
		if cmd.ProcessState != nil {
			c.status = cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
	}()
	return c, <-started
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
