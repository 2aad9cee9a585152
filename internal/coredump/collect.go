package coredump

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CoreSignal reports whether a signal's default action dumps core
// (signal(7)).
func CoreSignal(sig syscall.Signal) bool {
	switch sig {
	case unix.SIGQUIT, unix.SIGILL, unix.SIGTRAP, unix.SIGABRT, unix.SIGBUS, unix.SIGFPE,
		unix.SIGSEGV, unix.SIGXCPU, unix.SIGXFSZ, unix.SIGSYS:
		return true
	}
	return false
}

// Dumping reports whether the process is writing its core now
// (CoreDumping in /proc/PID/status, Linux 4.15 and later). A SIGKILL then
// cuts the core short, so teardown waits for it.
func Dumping(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), "\nCoreDumping:")
	return ok && strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]) == "1"
}

// Launch is what the launcher knows about a QEMU that ended.
type Launch struct {
	Domid            int
	Name, Kind, Mode string
	// QEMU is the real binary, the one gdb needs with the core.
	QEMU    string
	PID     int
	Started time.Time
	// Dir and Root are QEMU's working directory and root directory as it
	// ran (see WorkingDir): a relative core_pattern resolves there.
	Dir, Root string
	// LogDir is where the console log is, and where crash records go.
	LogDir string
	// Limit is the soft RLIMIT_CORE QEMU ran with.
	Limit Limit
	// RunAs is set when QEMU dropped privileges (-runas, -run-with user=).
	RunAs bool
	// ToolCore is the core a tool QEMU ran under writes itself instead of
	// the kernel (valgrind: "<log file>.core.<pid>"), if any.
	ToolCore string
}

// WorkingDir says where QEMU's working directory and root were when it
// died: QEMU changes directory to "/" (inside the new root) for -chroot
// and for -daemonize, and otherwise stays in the launcher's.
func WorkingDir(launcherDir, chroot string, daemonize bool) (dir, root string) {
	root = "/"
	if chroot != "" {
		root = chroot
	}
	if chroot != "" || daemonize {
		return "/", root
	}
	return launcherDir, root
}

// Crash is the record of one device model that died of a core-dumping
// signal. It is written as JSON beside the console log.
type Crash struct {
	Domid   int    `json:"domid"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Mode    string `json:"mode"`
	QEMU    string `json:"qemu"`
	BuildID string `json:"qemu_build_id,omitempty"`
	PID     int    `json:"qemu_pid"`
	Signal  string `json:"signal"`
	// SignalNumber is the signal's number on this machine.
	SignalNumber int       `json:"signal_number"`
	Time         time.Time `json:"time"`
	// Core is the core file, named by domain, guest and time; empty when
	// there is no core file here.
	Core     string `json:"core,omitempty"`
	CoreSize int64  `json:"core_size,omitempty"`
	// CoreAllocated is the core's size on disk (it is sparse).
	CoreAllocated int64 `json:"core_allocated,omitempty"`
	// Whole is false for a core cut short (by a size limit, or a full
	// disk).
	Whole bool `json:"whole"`
	// Handler is the program or socket core_pattern handed the core to.
	Handler string `json:"handler,omitempty"`
	// Note says why there is no core, or where the handler keeps it.
	Note string `json:"note,omitempty"`
	// Backtrace is how many lines of backtrace went to the toolstack log.
	Backtrace int `json:"backtrace_lines"`
	// Record is this record's own file.
	Record string `json:"record"`
}

// RecordPrefix starts every crash record's and core's file name.
const RecordPrefix = "dmlaunch-crash-"

// BaseName is "dmlaunch-crash-<domid>-<guest>-<UTC time>": the guest name
// is cut to letters, digits, '.', '_' and '-', so a name chosen by
// whoever wrote the domain's configuration cannot steer the path.
func BaseName(domid int, name string, t time.Time) string {
	return RecordPrefix + strconv.Itoa(domid) + "-" + SafeName(name) + "-" + t.UTC().Format("20060102T150405Z")
}

// SafeName keeps a name usable as part of a file name.
func SafeName(name string) string {
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= 64 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if s := strings.Trim(b.String(), "."); s != "" {
		return s
	}
	return "_"
}

// Collector finds cores. The zero value reads the running system.
type Collector struct {
	// ProcSys is /proc/sys, or a copy for tests.
	ProcSys string
	// HandlerWait bounds the wait for a core handler to store a core.
	HandlerWait time.Duration
	// Now is the clock.
	Now func() time.Time
}

func (c *Collector) procSys() string {
	if c.ProcSys != "" {
		return c.ProcSys
	}
	return "/proc/sys"
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Collect finds the core of a QEMU that died of sig (dumped is the wait
// status's core flag), names it by domain, guest and time, and fills in
// the crash record. It does not write the record (Save does) nor take the
// backtrace (Backtrace does). QEMU has been reaped: the kernel had written
// a core file by then, and a handler has been handed all of it.
func (c *Collector) Collect(l Launch, sig syscall.Signal, dumped bool) Crash {
	now := c.now()
	cr := Crash{
		Domid: l.Domid, Name: l.Name, Kind: l.Kind, Mode: l.Mode, QEMU: l.QEMU, PID: l.PID,
		Signal: SignalName(sig), SignalNumber: int(sig), Time: now.UTC(), Whole: false,
	}
	cr.BuildID, _ = BuildID(l.QEMU)
	base := BaseName(l.Domid, l.Name, now)
	cr.Record = filepath.Join(l.LogDir, base+".json")
	if _, err := os.Lstat(cr.Record); err == nil { // two crashes in one second
		base += "-" + strconv.Itoa(l.PID)
		cr.Record = filepath.Join(l.LogDir, base+".json")
	}

	if l.ToolCore != "" {
		// valgrind catches the signal, writes its own core and, with
		// RLIMIT_CORE set to 0, dies of the signal without a kernel core.
		if info, err := ReadCore(l.ToolCore); err == nil {
			cr.Core = keep(l.ToolCore, l.LogDir, base+".core")
			cr.CoreSize, cr.CoreAllocated, cr.Whole = info.Size, info.Allocated, info.Whole()
			cr.Note = "written by the tool QEMU ran under, not the kernel"
			return cr
		}
	}
	pat, err := ReadPattern(c.procSys())
	if err != nil {
		cr.Note = "core_pattern unreadable: " + err.Error()
		return cr
	}
	if !dumped {
		cr.Note = c.whyNoCore(l, pat)
		return cr
	}
	switch pat.Kind() {
	case ToFile:
		found, err := c.findFile(l, pat, sig)
		if err != nil {
			cr.Note = err.Error()
			return cr
		}
		cr.Core = keep(found, l.LogDir, base+".core")
		if info, err := ReadCore(cr.Core); err == nil {
			cr.CoreSize, cr.CoreAllocated, cr.Whole = info.Size, info.Allocated, info.Whole()
		}
	case ToHandler, ToSocket:
		cr.Handler = pat.Handler()
		if l.Limit == 0 {
			// The kernel ignores the limit for a handler but tells it
			// (%c); systemd-coredump honours it and keeps nothing.
			cr.Note = "handed to " + cr.Handler + " with a core size limit of 0 (DMLAUNCH_CORE_LIMIT=0): it keeps none if it honours the limit"
			break
		}
		cr.Note = c.handlerNote(l, cr.Handler, now)
	}
	return cr
}

// whyNoCore explains a core-dumping signal that left no core.
func (c *Collector) whyNoCore(l Launch, pat Pattern) string {
	switch {
	case l.Limit == 0 && pat.Kind() == ToFile:
		return "cores are off: the core size limit is 0 (DMLAUNCH_CORE_LIMIT=0)"
	case pat.Kind() == ToNowhere:
		return "kernel.core_pattern is empty: the kernel writes no core; see dmctl doctor"
	}
	if l.RunAs {
		if b, err := os.ReadFile(filepath.Join(c.procSys(), "fs/suid_dumpable")); err == nil && strings.TrimSpace(string(b)) == "0" {
			return "QEMU dropped privileges (-runas) and fs.suid_dumpable is 0, so the kernel writes no core; see dmctl doctor"
		}
	}
	if pat.Kind() == ToFile {
		where := pat.Raw
		if !filepath.IsAbs(where) {
			where += " in " + l.Dir
		}
		return "the kernel wrote no core (core_pattern " + strconv.Quote(pat.Raw) + ", so " + where +
			"): the directory may not be writable by QEMU's user, or a file of that name may be in the way; see dmctl doctor"
	}
	return "the core handler " + strconv.Quote(pat.Handler()) + " took no core; see dmctl doctor"
}

// findFile resolves a file pattern as the kernel did and picks the core of
// this process: the one whose note names its pid, else the newest core
// written since QEMU started.
func (c *Collector) findFile(l Launch, pat Pattern, sig syscall.Signal) (string, error) {
	exe, _ := filepath.EvalSymlinks(l.QEMU)
	host, _ := os.Hostname()
	g := pat.Glob(Facts{PID: l.PID, Signal: int(sig), Hostname: host, Exe: exe})
	if !filepath.IsAbs(g) {
		g = filepath.Join(globEscape(l.Dir), g)
	}
	g = filepath.Join(globEscape(l.Root), g)
	matches, _ := filepath.Glob(g)
	type cand struct {
		path  string
		mtime time.Time
	}
	var fallback []cand
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err != nil || !fi.Mode().IsRegular() || fi.ModTime().Before(l.Started.Add(-time.Second)) {
			continue
		}
		info, err := ReadCore(m)
		if err != nil {
			continue
		}
		if info.PID == l.PID {
			return m, nil
		}
		fallback = append(fallback, cand{m, fi.ModTime()})
	}
	if len(fallback) > 0 {
		sort.Slice(fallback, func(i, j int) bool { return fallback[i].mtime.After(fallback[j].mtime) })
		return fallback[0].path, nil
	}
	return "", fmt.Errorf("the kernel reported a core, but none was found at %s (core_pattern %q)", g, pat.Raw)
}

// keep renames the core beside the console log; across file systems it
// is renamed where it is instead (a copy of a large core would hold up
// the launcher's exit). It ends readable by its owner only: a core holds
// guest memory.
func keep(found, logDir, name string) string {
	dst := filepath.Join(logDir, name)
	if err := os.Rename(found, dst); err != nil {
		dst = filepath.Join(filepath.Dir(found), name)
		if err := os.Rename(found, dst); err != nil {
			dst = found
		}
	}
	_ = os.Chmod(dst, 0o600)
	return dst
}

// handlerNote says where a core handler keeps the core. systemd-coredump
// is asked, by pid, until it has stored it.
func (c *Collector) handlerNote(l Launch, handler string, now time.Time) string {
	if filepath.Base(handler) != "systemd-coredump" {
		return "handed to " + handler + ", which keeps it"
	}
	tool, err := exec.LookPath("coredumpctl")
	if err != nil {
		return "handed to systemd-coredump; coredumpctl is not installed to find it"
	}
	wait := c.HandlerWait
	if wait == 0 {
		wait = 10 * time.Second
	}
	deadline := now.Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		out, err := exec.CommandContext(ctx, tool, "--no-pager", "--no-legend", "list", strconv.Itoa(l.PID)).Output()
		cancel()
		if err == nil && len(strings.TrimSpace(string(out))) > 0 {
			return "kept by systemd-coredump: coredumpctl gdb " + strconv.Itoa(l.PID) + " (or coredumpctl dump " + strconv.Itoa(l.PID) + " -o FILE)"
		}
		if time.Now().After(deadline) {
			return "handed to systemd-coredump, which has not listed it after " + wait.String() + "; coredumpctl list " + strconv.Itoa(l.PID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Summary is the log line's text after the subject: how QEMU died,
// whether it dumped core and where the core is.
func (cr Crash) Summary() string {
	s := fmt.Sprintf("QEMU (pid %d) was killed by %s (%s)", cr.PID, cr.Signal, describeSignal(cr.SignalNumber))
	switch {
	case cr.Core != "" && cr.Whole:
		return s + fmt.Sprintf(" and dumped core: %s (%s, %s on disk, whole); crash record %s", cr.Core, sizeText(cr.CoreSize), sizeText(cr.CoreAllocated), cr.Record)
	case cr.Core != "":
		return s + fmt.Sprintf(" and dumped core: %s (%s, %s on disk, CUT SHORT: raise DMLAUNCH_CORE_LIMIT); crash record %s", cr.Core, sizeText(cr.CoreSize), sizeText(cr.CoreAllocated), cr.Record)
	case cr.Handler != "":
		return s + "; core " + cr.Note + "; crash record " + cr.Record
	}
	return s + "; no core: " + cr.Note + "; crash record " + cr.Record
}

// SignalName is "SIGSEGV" for a signal.
func SignalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(sig))
}

func describeSignal(n int) string { return syscall.Signal(n).String() }

func sizeText(n int64) string {
	switch {
	case n >= 10<<20:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 10<<10:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
