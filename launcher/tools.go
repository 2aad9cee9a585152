package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/argv"
)

// The tools the strace and memcheck modes run, by the name found on PATH
// and the Debian package that has it.
const (
	ToolStrace   = "strace"
	ToolValgrind = "valgrind"
	ToolVgdb     = "vgdb"
)

// toolPackage is the Debian package that has a tool. (A switch, not a map:
// a package-level map is built at every launch's start-up.)
func toolPackage(tool string) string {
	switch tool {
	case ToolStrace:
		return "strace"
	case ToolValgrind, ToolVgdb:
		return "valgrind"
	}
	return ""
}

// ToolMissingError is a debug mode whose tool is not installed: the
// launch is refused (exit status 2) rather than started without it.
type ToolMissingError struct{ Mode, Tool string }

func (e *ToolMissingError) Error() string {
	return fmt.Sprintf("DMLAUNCH_DEBUG=%s needs %s, which is not installed", e.Mode, e.Tool)
}

// Hint says how to install the tool.
func (e *ToolMissingError) Hint() string {
	return "apt-get install " + toolPackage(e.Tool) + " (scripts/deps.sh), or choose another mode"
}

// ToolLogPath is a per-launch file in the log directory for a tool's
// output: dmlaunch-strace-5-20261202T150405Z.log.
func ToolLogPath(logDir, tool string, domid int, t time.Time) string {
	return filepath.Join(logDir, "dmlaunch-"+tool+"-"+strconv.Itoa(domid)+"-"+t.UTC().Format("20060102T150405Z")+".log")
}

// VgdbPrefix is where valgrind's gdbserver and vgdb meet (their FIFOs
// and shared memory file): inside the state directory, private to root.
func VgdbPrefix(stateDir string, domid int) string {
	return filepath.Join(stateDir, "vgdb-"+strconv.Itoa(domid))
}

// MemcheckArgs is valgrind's command line around QEMU's argv (path
// first). vgdbError < 0 leaves valgrind's default: never stop.
//
// valgrind runs one client thread at a time, and its default lock hands
// the CPU back to whichever thread the kernel wakes first: a TCG vCPU
// thread can then keep it for minutes while QEMU's main loop, which
// delivers the guest's serial output and timers, waits (measured with the
// built-in guest: 2 boots in 5 had not printed after 180 s; with
// --fair-sched, 10 of 10 printed in 18-24 s). The ticket lock takes
// threads in turn; "try" falls back where valgrind lacks it.
func MemcheckArgs(valgrind, logFile, vgdbPrefix string, vgdbError int, qemuArgv []string) []string {
	args := []string{valgrind, "--tool=memcheck", "--fair-sched=try", "--log-file=" + logFile, "--vgdb=yes", "--vgdb-prefix=" + vgdbPrefix}
	if vgdbError >= 0 {
		args = append(args, "--vgdb-error="+strconv.Itoa(vgdbError))
	}
	return append(args, qemuArgv...)
}

// StraceArgs attaches strace to a running pid, following every thread,
// with wall-clock times to the microsecond.
func StraceArgs(strace, logFile string, pid int) []string {
	return []string{strace, "-f", "-tt", "-o", logFile, "-p", strconv.Itoa(pid)}
}

// VgdbArgs relays one debugger (on stdin and stdout) to valgrind's
// gdbserver inside the process.
func VgdbArgs(vgdb, prefix string, pid int) []string {
	return []string{vgdb, "--pid=" + strconv.Itoa(pid), "--vgdb-prefix=" + prefix}
}

// tool returns the mode and tool name a property of the plan's modes
// asks for, if any.
func (p *Plan) tool(of func(DebugMode) string) (mode, tool string) {
	for _, m := range p.modes() {
		if t := of(m); t != "" {
			return m.Name, t
		}
	}
	return "", ""
}

// findTools looks every tool of the plan's modes up on PATH before
// anything starts.
func (s *supervision) findTools() error {
	s.tools = map[string]string{}
	for _, of := range []func(DebugMode) string{
		func(m DebugMode) string { return m.Tracer },
		func(m DebugMode) string { return m.Wrapper },
		func(m DebugMode) string { return m.PortTool },
	} {
		mode, tool := s.p.tool(of)
		if tool == "" {
			continue
		}
		path, err := exec.LookPath(tool)
		if err != nil {
			return &ToolMissingError{Mode: mode, Tool: tool}
		}
		s.tools[tool] = path
	}
	return nil
}

// newToolLog creates the per-launch log file of a tool, 0640 like the
// console log; a launch in the same second as another gets its pid added.
func (s *supervision) newToolLog(tool string) (string, error) {
	path := ToolLogPath(s.p.Config.LogDir, tool, s.p.Domid, time.Now())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, os.ErrExist) {
		path = path[:len(path)-len(".log")] + "-" + strconv.Itoa(os.Getpid()) + ".log"
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	}
	if err != nil {
		return "", fmt.Errorf("%s log: %w", tool, err)
	}
	return path, f.Close()
}

// wrapQEMU puts QEMU under its wrapper (valgrind) in the same process:
// the pid the launcher starts, signals and reaps is QEMU's.
func (s *supervision) wrapQEMU() error {
	_, wrapper := s.p.tool(func(m DebugMode) string { return m.Wrapper })
	if wrapper != ToolValgrind {
		return nil
	}
	log, err := s.newToolLog("memcheck")
	if err != nil {
		return err
	}
	s.toolLog, s.toolName = log, "memcheck"
	s.vgdbPrefix = VgdbPrefix(s.p.Config.StateDir, s.p.Domid)
	s.command = MemcheckArgs(s.tools[ToolValgrind], log, s.vgdbPrefix, s.p.Config.VgdbError, s.p.Argv)
	return nil
}

// portCommand is what each debugger on the port gets, when not gdbserver.
func (s *supervision) portCommand() func(pid int) []string {
	_, tool := s.p.tool(func(m DebugMode) string { return m.PortTool })
	if tool != ToolVgdb {
		return nil
	}
	vgdb, prefix := s.tools[ToolVgdb], s.vgdbPrefix
	return func(pid int) []string { return VgdbArgs(vgdb, prefix, pid) }
}

// attachTracer starts strace on the held QEMU and releases the hold to
// it once it is QEMU's tracer: the trace starts at QEMU's first
// instruction.
func (s *supervision) attachTracer() error {
	_, tracer := s.p.tool(func(m DebugMode) string { return m.Tracer })
	if tracer != ToolStrace {
		return nil
	}
	log, err := s.newToolLog(tracer)
	if err != nil {
		return err
	}
	s.toolLog, s.toolName = log, tracer
	args := StraceArgs(s.tools[ToolStrace], log, s.qemu.pid())
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan struct{})
	started := make(chan error, 1)
	// Pdeathsig follows the thread that forked strace.
	go func() {
		runtime.LockOSThread()
		defer close(done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("strace: %w", err)
	}
	s.tracer, s.tracerDone = cmd, done
	s.atExit(func() { s.stopTracer(0) })
	if err := s.hold.ReleaseTo(cmd.Process.Pid, 30*time.Second); err != nil {
		s.logf("strace did not attach (%v): QEMU runs on untraced", err)
		s.releaseHold()
	}
	return nil
}

// stopTracer waits up to grace for strace to end by itself (it does when
// QEMU is gone, after writing the exit), then kills it.
func (s *supervision) stopTracer(grace time.Duration) {
	if s.tracer == nil {
		return
	}
	select {
	case <-s.tracerDone:
	case <-time.After(grace):
		_ = s.tracer.Process.Kill()
		<-s.tracerDone
	}
	s.tracer = nil
}

// announceTools says where the tool's output goes, and what it costs.
func (s *supervision) announceTools() error {
	switch {
	case s.tracer != nil:
		s.logf("strace -f -tt traces QEMU (pid %d) from its first instruction into %s", s.qemu.pid(), s.toolLog)
	case s.command != nil:
		xen := ""
		if k := s.p.Kind; k == argv.KindHVM || k == argv.KindPV || k == argv.KindStubdomDM {
			xen = "; on a Xen host expect warnings about Xen ioctls valgrind does not know (privcmd, evtchn, gntdev)"
		}
		stop := "never stops QEMU by itself"
		if v := s.p.Config.VgdbError; v == 0 {
			stop = "holds QEMU before its first instruction until a debugger attaches"
		} else if v > 0 {
			stop = fmt.Sprintf("stops QEMU after %d errors until a debugger attaches", v)
		}
		s.logf("QEMU (pid %d) runs under valgrind memcheck, its log in %s; the debug port serves vgdb, which %s; "+
			"memcheck is 20 to 50 times slower, and the toolstack destroys the domain if QEMU has not started within %v%s",
			s.qemu.pid(), s.toolLog, stop, ToolstackStartTimeout, xen)
	}
	return nil
}

// reportTools ends the tool's part once QEMU is gone.
func (s *supervision) reportTools() error {
	if s.tracer != nil {
		s.stopTracer(5 * time.Second)
	}
	if s.toolLog != "" {
		size := int64(0)
		if fi, err := os.Stat(s.toolLog); err == nil {
			size = fi.Size()
		}
		s.logf("%d bytes of %s output in %s", size, s.toolName, s.toolLog)
	}
	return nil
}

func (c *Config) applyVgdbError(get func(string) string, bad func(name, reason string) error) error {
	v := get("DMLAUNCH_VGDB_ERROR")
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return bad("DMLAUNCH_VGDB_ERROR", "must be a count of errors: 0 or more")
	}
	c.VgdbError = n
	return nil
}
