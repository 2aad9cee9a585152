package gdbwrap

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Hold keeps a freshly exec'd process from running its first instruction
// until a tool (gdbserver, strace) has attached to it.
//
// It holds the process in a cgroup freezer, not a job-control stop: a
// job-stopped tracee hands the attaching tool a second SIGSTOP, and the
// SIGCONT that clears it reaches gdb as "Program received signal SIGCONT".
// A frozen task has no signal pending; when it is thawed after the tool's
// PTRACE_ATTACH it takes the tool's SIGSTOP and nothing else.
//
// Use:
//
//	cmd.SysProcAttr.Ptrace = true
//	// on one goroutine locked to its OS thread (the tracer):
//	cmd.Start()
//	hold, err := gdbwrap.HoldAtExec(cmd.Process, 0)
//	// later, from anywhere:
//	tool := start("gdbserver --attach - PID")
//	hold.ReleaseTo(tool.Pid, 30*time.Second)
//	// or let whoever attaches (gdb -p) have it:
//	go hold.ReleaseOnAttach(20 * time.Millisecond)
//	// or, on every teardown path before any signal:
//	hold.Release()
//
// Where no cgroup freezer is writable the process is left in a
// job-control stop instead (Method says so, Fallback says why), and
// ReleaseTo ends it with SIGCONT once the tool has it in a ptrace-stop;
// gdb then reports that SIGCONT once.
type Hold struct {
	// Method is how the process is held: one of the Hold* constants.
	Method string
	// Fallback says why no freezer was used ("" when one was).
	Fallback string

	process *os.Process
	pid     int
	fz      *freezer
	guard   *os.Process
	// guardPipe's write end: the guard thaws and cleans up when it reads
	// EOF, which the kernel also produces when this process dies.
	guardPipe *os.File

	mu       sync.Mutex
	released bool
}

// Ways of holding a process.
const (
	HoldCgroupV2 = "cgroup v2 freezer"
	HoldCgroupV1 = "cgroup v1 freezer"
	HoldJobStop  = "job-control stop"
)

// HoldOptions tunes HoldAtExec; the zero value is right for production.
type HoldOptions struct {
	// Methods limits the freezers tried, in order (HoldCgroupV2,
	// HoldCgroupV1); nil tries both. The job-control stop is always last.
	Methods []string
	// Guard is the program run as the hold's guard (see RunHoldGuard):
	// its main must call RunHoldGuard when IsHoldGuard; "" means
	// /proc/self/exe, the launcher itself.
	Guard string
}

// HoldAtExec waits for p's exec-time ptrace stop (p was started with
// SysProcAttr.Ptrace) and holds it there, untraced, before its first
// instruction. It must run on the OS thread that started p: that thread
// is p's tracer until HoldAtExec detaches it.
func HoldAtExec(p *os.Process, o HoldOptions) (*Hold, error) {
	pid := p.Pid
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for the exec stop of pid %d: %w", pid, err)
		}
		break
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("pid %d did not stop at exec (wait status %#x)", pid, uint32(ws))
	}
	h := &Hold{process: p, pid: pid}
	methods := o.Methods
	if methods == nil {
		methods = []string{HoldCgroupV2, HoldCgroupV1}
	}
	var why []string
	for _, m := range methods {
		fz, err := newFreezer(m, pid)
		if err == nil {
			err = h.startGuard(fz, o)
			if err == nil {
				err = fz.holdFrozen(pid)
			}
			if err != nil {
				h.stopGuard()
				fz.remove()
			}
		}
		if err != nil {
			why = append(why, m+": "+err.Error())
			continue
		}
		h.fz, h.Method = fz, m
		break
	}
	sig := 0
	if h.fz == nil {
		// No freezer: leave a job-control stop behind instead.
		h.Method, h.Fallback = HoldJobStop, strings.Join(why, "; ")
		sig = int(syscall.SIGSTOP)
	}
	if err := ptraceDetach(pid, sig); err != nil {
		_ = h.Release()
		return nil, fmt.Errorf("detach from pid %d at exec: %w", pid, err)
	}
	if h.fz != nil {
		if err := h.fz.waitFrozen(5 * time.Second); err != nil {
			_ = h.Release()
			return nil, err
		}
	}
	return h, nil
}

func ptraceDetach(pid, sig int) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, uintptr(sig), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// ReleaseTo lets the held process run once toolPID is its tracer: the
// tool's PTRACE_ATTACH is taken while frozen, and its SIGSTOP is the
// first thing the process sees when thawed. The wait is for TracerPid
// only, never for the ptrace-stop: the tool waits for that stop, which
// comes after the thaw. It gives up after timeout (or when the tool or
// the process is gone) and leaves the process held.
func (h *Hold) ReleaseTo(toolPID int, timeout time.Duration) error {
	if h.Released() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		tracer, state, err := TraceState(h.pid)
		if err != nil {
			return fmt.Errorf("pid %d: %w", h.pid, err)
		}
		if tracer == toolPID && (h.fz != nil || state == 't') {
			break
		}
		if _, toolState, err := TraceState(toolPID); err != nil || toolState == 'Z' {
			return fmt.Errorf("pid %d ended before it attached to pid %d", toolPID, h.pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not attach to pid %d within %v", toolPID, h.pid, timeout)
		}
		time.Sleep(delay)
	}
	return h.Release()
}

// ReleaseOnAttach releases the hold to whatever tool attaches to the
// process by itself (gdb -p, strace -p): it polls the tracer every poll
// until one appears, then releases to it as ReleaseTo does. It returns
// once the hold is released, by it or by anyone, or the process is gone.
func (h *Hold) ReleaseOnAttach(poll time.Duration) {
	for !h.Released() {
		tracer, _, err := TraceState(h.pid)
		if err != nil {
			return
		}
		if tracer != 0 {
			_ = h.ReleaseTo(tracer, 30*time.Second)
			return
		}
		time.Sleep(poll)
	}
}

// Release lets the process run (untraced, or on to its tracer) and
// removes the hold cgroup. Every teardown calls it before signalling the
// process: a task frozen by the v1 freezer does not even die of SIGKILL.
// Calling it again does nothing.
func (h *Hold) Release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil
	}
	h.released = true
	var err error
	if h.fz != nil {
		err = h.fz.release(h.pid)
	} else if h.Method == HoldJobStop {
		// Through the process handle: a bare pid may be someone else's.
		if e := h.process.Signal(syscall.SIGCONT); e != nil && !errors.Is(e, os.ErrProcessDone) {
			err = e
		}
	}
	h.stopGuard()
	return err
}

// Released reports whether the hold has been released.
func (h *Hold) Released() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

// PID is the held process's pid.
func (h *Hold) PID() int { return h.pid }

// freezer is one hold cgroup: dir, made inside the launcher's own cgroup
// (origin) in one hierarchy.
type freezer struct {
	version int // 1 or 2
	dir     string
	origin  string
}

const holdPrefix = "dmlaunch-hold-"

// newFreezer makes the hold cgroup for pid in the calling process's own
// cgroup of the hierarchy method names.
func newFreezer(method string, pid int) (*freezer, error) {
	version := 2
	if method == HoldCgroupV1 {
		version = 1
	} else if method != HoldCgroupV2 {
		return nil, fmt.Errorf("unknown hold method %q", method)
	}
	origin, err := ownCgroupDir(version)
	if err != nil {
		return nil, err
	}
	fz := &freezer{version: version, dir: filepath.Join(origin, holdPrefix+strconv.Itoa(pid)), origin: origin}
	if err := os.Mkdir(fz.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if _, err := os.Stat(fz.control()); err != nil {
		fz.remove()
		return nil, fmt.Errorf("%s has no freezer", origin)
	}
	return fz, nil
}

func (fz *freezer) control() string {
	if fz.version == 2 {
		return filepath.Join(fz.dir, "cgroup.freeze")
	}
	return filepath.Join(fz.dir, "freezer.state")
}

func (fz *freezer) setFrozen(frozen bool) error {
	v := map[bool]map[int]string{true: {1: "FROZEN", 2: "1"}, false: {1: "THAWED", 2: "0"}}[frozen][fz.version]
	return os.WriteFile(fz.control(), []byte(v), 0)
}

// holdFrozen freezes the (empty) hold cgroup and moves pid into it: the
// task, still in its exec-time ptrace stop, is frozen as soon as it
// leaves that stop, before it returns to user space.
func (fz *freezer) holdFrozen(pid int) error {
	if err := fz.setFrozen(true); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(fz.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// waitFrozen waits until the kernel reports the hold cgroup frozen.
func (fz *freezer) waitFrozen(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		frozen, err := fz.frozen()
		if err != nil || frozen {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not frozen within %v", fz.dir, timeout)
		}
		time.Sleep(delay)
	}
}

func (fz *freezer) frozen() (bool, error) {
	if fz.version == 1 {
		b, err := os.ReadFile(fz.control())
		return strings.TrimSpace(string(b)) == "FROZEN", err
	}
	b, err := os.ReadFile(filepath.Join(fz.dir, "cgroup.events"))
	return strings.Contains(string(b), "frozen 1"), err
}

// release thaws the hold cgroup, moves pid back where it came from and
// removes the hold cgroup.
func (fz *freezer) release(pid int) error {
	err := fz.setFrozen(false)
	if e := os.WriteFile(filepath.Join(fz.origin, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); e != nil && !errors.Is(e, unix.ESRCH) {
		err = errors.Join(err, e)
	}
	if e := fz.remove(); e != nil {
		err = errors.Join(err, e)
	}
	return err
}

// remove deletes the hold cgroup once it is empty (a task that just died
// may still be listed for a moment).
func (fz *freezer) remove() error {
	var err error
	for i := 0; i < 200; i++ {
		err = unix.Rmdir(fz.dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("remove hold cgroup %s: %w", fz.dir, err)
}

// ownCgroupDir is the directory of the calling process's cgroup in the
// v2 hierarchy, or in the v1 hierarchy that has the freezer.
func ownCgroupDir(version int) (string, error) {
	return CgroupDir("/proc/self/cgroup", "/proc/self/mountinfo", version)
}

// FrozenCgroup is the cgroup directory that holds pid frozen (v2
// cgroup.freeze, or a v1 freezer), or "" when none does: how a gdb-wait
// launch holds QEMU until a debugger comes.
func FrozenCgroup(pid int) string {
	for _, version := range []int{2, 1} {
		dir, err := CgroupDir("/proc/"+strconv.Itoa(pid)+"/cgroup", "/proc/self/mountinfo", version)
		if err != nil {
			continue
		}
		if frozen, err := (&freezer{version: version, dir: dir}).frozen(); err == nil && frozen {
			return dir
		}
	}
	return ""
}

// CgroupDir is the directory of the cgroup that a /proc/<pid>/cgroup
// file names in the v2 hierarchy (version 2), or in the v1 hierarchy that
// has the freezer (version 1), where a mountinfo file (/proc/self/
// mountinfo) shows that hierarchy mounted. It is where a hold cgroup is
// made, and what dmctl doctor checks.
func CgroupDir(procCgroup, mountinfo string, version int) (string, error) {
	mountPoint, mountRoot, err := cgroupMount(mountinfo, version)
	if err != nil {
		return "", err
	}
	f, err := os.Open(procCgroup)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "0::/path" (v2) or "6:freezer:/path" (v1)
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		match := version == 2 && parts[0] == "0" && parts[1] == ""
		if version == 1 {
			for _, c := range strings.Split(parts[1], ",") {
				match = match || c == "freezer"
			}
		}
		if match {
			rel := strings.TrimPrefix(parts[2], mountRoot)
			return filepath.Join(mountPoint, rel), nil
		}
	}
	return "", fmt.Errorf("not in a %s cgroup", map[int]string{1: "v1 freezer", 2: "v2"}[version])
}

// cgroupMount finds where the v2 hierarchy, or the v1 freezer hierarchy,
// is mounted, and which of its cgroups the mount shows as its root.
func cgroupMount(mountinfo string, version int) (mountPoint, root string, err error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 {
			continue
		}
		switch {
		case version == 2 && b[0] == "cgroup2":
		case version == 1 && b[0] == "cgroup" && hasOption(b[2], "freezer"):
		default:
			continue
		}
		return unescapeMountinfo(a[4]), unescapeMountinfo(a[3]), nil
	}
	if version == 2 {
		return "", "", errors.New("no cgroup2 hierarchy is mounted")
	}
	return "", "", errors.New("no v1 freezer hierarchy is mounted")
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TraceState reads TracerPid and the state letter from /proc/PID/status.
func TraceState(pid int) (tracer int, state byte, err error) {
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

// HoldGuardName is argv[0] of the hold's guard: a copy of the launcher
// that outlives it long enough to thaw and remove the hold cgroup if the
// launcher is killed while the process is held. Without it a SIGKILLed
// launcher would leave the process frozen for good (the v1 freezer keeps
// even the pdeathsig SIGKILL pending) and the hold cgroup behind.
const HoldGuardName = "dmlaunch-hold-guard"

// IsHoldGuard tells a main function that it was started as a hold guard.
func IsHoldGuard(args []string) bool {
	return len(args) == 5 && args[0] == HoldGuardName
}

// RunHoldGuard is the guard's whole life: it waits for EOF on fd 3 (the
// launcher closes its end after releasing the hold, and the kernel closes
// it when the launcher dies), then thaws the hold cgroup if it is still
// there, moves what lives in it back and removes it. It returns the exit
// status.
func RunHoldGuard(args []string) int {
	if !IsHoldGuard(args) {
		return 2
	}
	version, _ := strconv.Atoi(args[1])
	fz := &freezer{version: version, dir: filepath.Clean(args[2]), origin: filepath.Clean(args[3])}
	if (version != 1 && version != 2) || filepath.Dir(fz.dir) != fz.origin || !strings.HasPrefix(filepath.Base(fz.dir), holdPrefix) {
		fmt.Fprintf(os.Stderr, "%s: bad arguments %q\n", HoldGuardName, args[1:])
		return 2
	}
	// Terminal and toolstack signals are for the launcher; the guard
	// finishes its short job.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	pipe := os.NewFile(3, "hold-guard")
	buf := make([]byte, 1)
	for {
		if _, err := pipe.Read(buf); err != nil {
			break
		}
	}
	if _, err := os.Stat(fz.dir); err != nil {
		return 0 // released normally
	}
	_ = fz.setFrozen(false)
	if b, err := os.ReadFile(filepath.Join(fz.dir, "cgroup.procs")); err == nil {
		for _, pid := range strings.Fields(string(b)) {
			_ = os.WriteFile(filepath.Join(fz.origin, "cgroup.procs"), []byte(pid), 0)
		}
	}
	if err := fz.remove(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", HoldGuardName, err)
		return 1
	}
	return 0
}

// startGuard starts the hold's guard for fz.
func (h *Hold) startGuard(fz *freezer, o HoldOptions) error {
	exe := o.Guard
	if exe == "" {
		exe = "/proc/self/exe"
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	args := append([]string{HoldGuardName}, strconv.Itoa(fz.version), fz.dir, fz.origin, strconv.Itoa(h.pid))
	attr := &os.ProcAttr{
		Files: []*os.File{nil, nil, os.Stderr, r},
		// Its own session: a terminal's or a process group's signal must
		// not end it before its job is done.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	p, err := os.StartProcess(exe, args, attr)
	if err != nil {
		w.Close()
		return fmt.Errorf("start the hold guard: %w", err)
	}
	h.guard, h.guardPipe = p, w
	return nil
}

// stopGuard lets the guard end (it finds the hold cgroup gone) and reaps
// it.
func (h *Hold) stopGuard() {
	if h.guard == nil {
		return
	}
	h.guardPipe.Close()
	_, _ = h.guard.Wait()
	h.guard, h.guardPipe = nil, nil
}
