package registry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
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
	// Unknown: a pass-through launch whose QEMU daemonized, and whose
	// daemon can be neither found nor proved gone: its pidfile cannot be
	// trusted (a symbolic link, a device, another user's or a writable
	// file), cannot be found (a relative path in a record written before
	// records named their pidfile), or is held by a process that is not
	// this launch's QEMU. Follow's error says which. Never swept.
	Unknown State = "unknown"
)

// Gone tells whether the launch no longer runs: ended or stale.
func (s State) Gone() bool { return s == Ended || s == Stale }

// Follow says what became of the launch, and the pid of its QEMU when that
// is no longer the recorded one (a daemonized QEMU; once that has ended,
// the pid its pidfile still names, if the file is left), else 0. Owner is the
// uid of the state directory's owner, whose pidfiles are trusted as
// root's are. The error says why the state is Unknown, and is nil
// otherwise.
func (r Record) Follow(owner int) (State, int, error) {
	st, pid, err := follow(r.Launcher, r.Mode, r.PIDFile, owner, func() []string { return r.Argv })
	if st == Running && pid == 0 && r.QEMUPID == 0 {
		st = Starting
	}
	return st, pid, err
}

// Follow says what became of the launch, as Record.Follow does, except
// that a supervised launch that has not started QEMU yet is Running.
func (s Summary) Follow(owner int) (State, int, error) {
	return follow(s.Launcher, s.Mode, s.PIDFile, owner, s.argv)
}

func follow(launcher proc.Identity, mode, pidFile string, owner int, argv func() []string) (State, int, error) {
	switch {
	case launcher.Alive():
		return Running, 0, nil
	case mode != ModePassThrough:
		return Stale, 0, nil
	}
	recorded := argv()
	if pidFile == "" {
		// A record written before records named the pidfile: the
		// command line says whether QEMU daemonized, and where to.
		var err error
		if pidFile, err = recordedPIDFile(recorded); err != nil || pidFile == "" {
			if err != nil {
				return Unknown, 0, err
			}
			return Ended, 0, nil
		}
	}
	pid, err := Daemon(pidFile, launcher.StartTime, recorded, owner)
	switch {
	case err == nil:
		return Running, pid, nil
	case errors.Is(err, ErrDaemonGone):
		return Ended, pid, nil
	}
	return Unknown, 0, err
}

// DaemonPIDFile is the pidfile the launch's QEMU writes as it
// daemonizes: the recorded one, or for a record written before records
// named it, the one in its argv. "" when it does not daemonize with one.
func (r Record) DaemonPIDFile() string {
	if r.PIDFile != "" {
		return r.PIDFile
	}
	pf, _ := recordedPIDFile(r.Argv)
	return pf
}

// recordedPIDFile is the pidfile a recorded command line's QEMU wrote
// when it daemonized, "" when it did not. A relative path was resolved
// against a working directory nobody recorded: an error.
func recordedPIDFile(recorded []string) (string, error) {
	if len(recorded) < 2 {
		return "", nil
	}
	cl, _ := argv.Parse(recorded[1:]) // a cut-short line still has its options
	pf := DaemonPIDFile(cl)
	if pf != "" && !strings.HasPrefix(pf, "/") {
		return "", &PIDFileError{pf, "is relative, and the record does not say against which directory QEMU resolved it; the record is kept (dmctl prune --bad does not apply: remove it by hand once that QEMU is gone)"}
	}
	return pf, nil
}

// ErrDaemonGone: the daemon a pidfile named is gone. Its pidfile is
// missing (QEMU removes it when it exits), or no process holds the lock
// that QEMU keeps on it while it runs.
var ErrDaemonGone = errors.New("the daemonized QEMU is gone")

// Daemon finds the QEMU that a pass-through launch left running with
// -daemonize: QEMU forks, the process dmlaunch exec'd exits once the
// daemon is ready, and the daemon writes its pid to the -pidfile and
// holds a write lock (fcntl F_SETLK, a POSIX lock) on it for as long as
// it runs. The kernel says who holds that lock (F_GETLK): that process,
// alive, is QEMU's daemon. It counts as this launch's when the pid in the
// file is the holder's, the holder started no earlier than the launch
// (notBefore, the launcher's start time in clock ticks), and its command
// line has the recorded -xen-domid. Its program is not compared: QEMU
// may be run through a wrapper script that execs it.
//
// A pidfile that is missing, or that nobody holds a lock on, is
// ErrDaemonGone, with the pid the file names if it is left. Any other error (a pidfile that cannot be trusted, a
// holder that is not this launch's QEMU) leaves the question open.
func Daemon(pidFile string, notBefore uint64, recorded []string, owner int) (int, error) {
	pid, holder, err := readLockedPIDFile(pidFile, owner)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return 0, ErrDaemonGone
	case err != nil:
		return 0, err
	case holder == 0:
		return pid, ErrDaemonGone
	case holder < 0:
		return 0, &PIDFileError{pidFile, "is locked by a process this pid namespace cannot see, or with an open file description lock"}
	case pid != holder:
		return 0, &PIDFileError{pidFile, fmt.Sprintf("names pid %d but pid %d holds its lock", pid, holder)}
	}
	id, err := proc.Of(pid)
	if err != nil {
		return 0, ErrDaemonGone // the holder exited since
	}
	if id.StartTime < notBefore {
		return 0, &PIDFileError{pidFile, fmt.Sprintf("is held by pid %d, which started before the launch: not its QEMU", pid)}
	}
	cmdline, err := proc.Cmdline(pid)
	if err != nil {
		return 0, ErrDaemonGone
	}
	want, wok := xenDomid(tail(recorded))
	got, gok := xenDomid(tail(cmdline))
	if want != got || wok != gok {
		return 0, &PIDFileError{pidFile, fmt.Sprintf("is held by pid %d, whose -xen-domid is %q, not the launch's %q", pid, got, want)}
	}
	// The process was read more than once: it must still be the one
	// whose start time was checked, not a pid recycled in between.
	if !id.Alive() {
		return 0, ErrDaemonGone
	}
	return pid, nil
}

func tail(words []string) []string {
	if len(words) == 0 {
		return nil
	}
	return words[1:]
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

// PIDFileError is a pidfile that cannot be trusted or does not name a
// process.
type PIDFileError struct {
	Path   string
	Reason string
}

func (e *PIDFileError) Error() string { return "pidfile " + e.Path + " " + e.Reason }

// readLockedPIDFile reads the pid in a pidfile, and the pid of the process
// that holds a lock on it (0 when none does). The path comes from a
// record, so the file is first opened with O_PATH, which opens nothing
// (no tty becomes the reader's controlling terminal, no watchdog is
// armed, no FIFO blocks), without following a symbolic link; only a
// regular file owned by root or by owner, writable by nobody else, is
// then opened for reading, through /proc/self/fd, and at most 32 bytes
// are read: a decimal pid, a newline after it or not. Anything else is a
// *PIDFileError; a missing file is os.ErrNotExist.
func readLockedPIDFile(path string, owner int) (pid, holder int, err error) {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	case err != nil:
		return 0, 0, &PIDFileError{path, "cannot be opened: " + err.Error()}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return 0, 0, &PIDFileError{path, "cannot be examined: " + err.Error()}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return 0, 0, &PIDFileError{path, "is a symbolic link; not followed"}
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return 0, 0, &PIDFileError{path, "is not a regular file; not read"}
	case st.Uid != 0 && int(st.Uid) != owner:
		return 0, 0, &PIDFileError{path, fmt.Sprintf("is owned by uid %d, neither root nor the state directory's owner; not trusted", st.Uid)}
	case st.Mode&0o022 != 0:
		return 0, 0, &PIDFileError{path, fmt.Sprintf("has mode %04o, writable by others; not trusted", st.Mode&0o777)}
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, &PIDFileError{path, "cannot be read: " + err.Error()}
	}
	defer unix.Close(fd)
	// Who holds a lock on the whole file: QEMU takes a write lock.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
		return 0, 0, &PIDFileError{path, "cannot be tested for a lock: " + err.Error()}
	}
	if lk.Type != unix.F_UNLCK {
		holder = int(lk.Pid)
		if holder == 0 {
			holder = -1
		}
	}
	buf, err := atomicfile.ReadFD(fd, maxPIDFile)
	switch {
	case err != nil:
		return 0, holder, &PIDFileError{path, "cannot be read: " + err.Error()}
	case len(buf) > maxPIDFile:
		return 0, holder, &PIDFileError{path, fmt.Sprintf("is over %d bytes", maxPIDFile)}
	}
	text := strings.TrimSuffix(string(buf), "\n")
	pid, err = strconv.Atoi(text)
	if err != nil || pid <= 0 || text[0] == '+' || text[0] == '0' {
		if holder == 0 {
			// Nobody holds it: whatever it says, its daemon is gone.
			return 0, 0, nil
		}
		return 0, holder, &PIDFileError{path, fmt.Sprintf("holds %q, not a pid", text)}
	}
	return pid, holder, nil
}
