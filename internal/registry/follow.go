package registry

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"golang.org/x/sys/unix"
)

// ModePassThrough is the mode of a launch that exec'd the real QEMU in
// place: the launcher's pid is QEMU's.
const ModePassThrough = "pass-through"

// State is what became of a recorded launch.
type State string

const (
	// Running: the launcher runs (for a pass-through launch that is QEMU
	// itself), or the QEMU that a pass-through launch's -daemonize left
	// running, found through its pidfile.
	Running State = "running"
	// Starting: a supervised launch that runs but has not started QEMU
	// yet (its record has no QEMU pid). Only Record.Follow tells it.
	Starting State = "starting"
	// Ended: a pass-through launch whose QEMU has exited. That is how a
	// pass-through launch ends (xl destroy kills QEMU): it exec'd QEMU, so
	// nothing of dmlaunch was left to remove its record. Not damage.
	Ended State = "ended"
	// Stale: a supervised launcher that is gone without removing its
	// record (killed with SIGKILL, or it crashed): something went wrong.
	Stale State = "stale"
)

// Gone tells whether the launch no longer runs: ended or stale.
func (s State) Gone() bool { return s == Ended || s == Stale }

// Follow says what became of the launch, and the pid of its QEMU when that
// is no longer the recorded one (a daemonized QEMU), else 0.
func (r Record) Follow() (State, int) {
	st, pid := follow(r.Launcher, r.Mode, r.PIDFile, func() []string { return r.Argv })
	if st == Running && pid == 0 && r.QEMUPID == 0 {
		st = Starting
	}
	return st, pid
}

// Follow says what became of the launch, as Record.Follow does, except
// that a supervised launch that has not started QEMU yet is Running.
func (s Summary) Follow() (State, int) {
	return follow(s.Launcher, s.Mode, s.PIDFile, s.argv)
}

func follow(launcher proc.Identity, mode, pidFile string, argv func() []string) (State, int) {
	switch {
	case launcher.Alive():
		return Running, 0
	case mode != ModePassThrough:
		return Stale, 0
	case pidFile != "":
		if pid, ok := Daemon(pidFile, launcher.StartTime, argv()); ok {
			return Running, pid
		}
	}
	return Ended, 0
}

// Daemon finds the QEMU that a pass-through launch left running with
// -daemonize: QEMU forks, the process dmlaunch exec'd exits once the
// daemon is ready, and the daemon writes its pid to the -pidfile. The pid
// in pidFile counts only when that process is alive, started no earlier
// than the launch (notBefore, the launcher's start time in clock ticks),
// and runs the recorded QEMU (recorded[0]) with the recorded -xen-domid:
// a recycled pid, a pidfile that another program rewrote or a QEMU of
// another domain is not taken for it.
func Daemon(pidFile string, notBefore uint64, recorded []string) (int, bool) {
	if len(recorded) == 0 {
		return 0, false
	}
	pid, err := ReadPIDFile(pidFile)
	if err != nil {
		return 0, false
	}
	id, err := proc.Of(pid)
	if err != nil || id.StartTime < notBefore || !id.Alive() {
		return 0, false
	}
	cmdline, err := proc.Cmdline(pid)
	if err != nil || len(cmdline) == 0 || cmdline[0] != recorded[0] {
		return 0, false
	}
	want, wok := xenDomid(recorded[1:])
	got, gok := xenDomid(cmdline[1:])
	if want != got || wok != gok {
		return 0, false
	}
	// The process was read twice: it must still be the one whose start
	// time was checked, not a pid recycled in between.
	if !id.Alive() {
		return 0, false
	}
	return pid, true
}

func xenDomid(words []string) (string, bool) {
	cl, _ := argv.Parse(words) // a cut-short line still has its options
	return cl.Last("xen-domid")
}

// DaemonPIDFile returns the pidfile a command line's QEMU writes when it
// daemonizes: with -daemonize (or --daemonize) and -pidfile PATH (QEMU
// honours the last), the process started exits once the daemon runs, and
// PATH names the daemon. QEMU's -run-with takes neither. "" when the line
// does not daemonize with a pidfile.
func DaemonPIDFile(cl argv.CommandLine) string {
	if !cl.Has("daemonize") {
		return ""
	}
	path, _ := cl.Last("pidfile")
	return path
}

// maxPIDFile bounds a pidfile: QEMU writes "<pid>\n".
const maxPIDFile = 32

// PIDFileError is a pidfile that does not name a process.
type PIDFileError struct {
	Path   string
	Reason string
}

func (e *PIDFileError) Error() string { return "pidfile " + e.Path + " " + e.Reason }

// ReadPIDFile reads the pid in a pidfile without following a symbolic
// link and without blocking on a FIFO or a device: only a regular file of
// at most 32 bytes that holds a decimal pid, a newline after it or not.
// Anything else is a *PIDFileError; a missing file is os.ErrNotExist.
func ReadPIDFile(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ELOOP:
		return 0, &PIDFileError{path, "is a symbolic link"}
	case err != nil:
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, &PIDFileError{path, "is not a regular file"}
	}
	var buf [maxPIDFile + 1]byte
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n > maxPIDFile {
		return 0, &PIDFileError{path, fmt.Sprintf("is over %d bytes", maxPIDFile)}
	}
	text := strings.TrimSuffix(string(buf[:n]), "\n")
	pid, err := strconv.Atoi(text)
	if err != nil || pid <= 0 || text[0] == '+' || text[0] == '0' {
		return 0, &PIDFileError{path, fmt.Sprintf("holds %q, not a pid", text)}
	}
	return pid, nil
}
