// Package proc identifies processes by pid and start time, so that a
// recycled pid is never mistaken for the process that once had it.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// Identity names one process for its whole life.
type Identity struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat: clock ticks after boot.
	StartTime uint64 `json:"start_time"`
}

// stat reads /proc/<pid>/stat with plain system calls: it is read for
// every lease on every launch, and os.ReadFile's poller set-up costs more
// than the read.
func stat(pid int) (state byte, start uint64, err error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var buf [1024]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil {
		return 0, 0, &os.PathError{Op: "read", Path: path, Err: err}
	}
	state, start, err = parseStat(buf[:n])
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return state, start, nil
}

// parseStat takes the state (field 3) and the start time (field 22) from
// the text of /proc/<pid>/stat.
func parseStat(b []byte) (state byte, start uint64, err error) {
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start behind the last ')', one space apart.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, 0, errors.New("no command name")
	}
	fields := strings.SplitN(string(b[i+2:]), " ", 21)
	if len(fields) < 21 || fields[0] == "" {
		return 0, 0, fmt.Errorf("%d fields, want at least 22", len(fields)+2)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0][0], start, err
}

// StartTime reads a process's start time.
func StartTime(pid int) (uint64, error) {
	_, st, err := stat(pid)
	return st, err
}

// Self is the calling process's identity.
func Self() (Identity, error) { return Of(os.Getpid()) }

// Of returns the identity of a running process.
func Of(pid int) (Identity, error) {
	st, err := StartTime(pid)
	return Identity{PID: pid, StartTime: st}, err
}

// Alive reports whether the process still runs (a zombie counts as gone).
func (id Identity) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	state, st, err := stat(id.PID)
	return err == nil && st == id.StartTime && state != 'Z' && state != 'X'
}

// maxCmdline bounds what Cmdline reads: the kernel takes argv and the
// environment together up to a quarter of the stack limit (2 MiB with the
// usual 8 MiB), and QEMU's lines are a few KiB.
const maxCmdline = 4 << 20

// Cmdline reads a process's argv from /proc/<pid>/cmdline, with plain
// system calls and at most 4 MiB. A process that is exiting, or a kernel
// thread, has none (an empty slice).
func Cmdline(pid int) ([]string, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/cmdline"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf, err := atomicfile.ReadFD(fd, maxCmdline)
	switch {
	case err != nil:
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	case len(buf) > maxCmdline:
		return nil, fmt.Errorf("%s: over %d bytes", path, maxCmdline)
	case len(buf) == 0:
		return []string{}, nil
	}
	return strings.Split(strings.TrimSuffix(string(buf), "\x00"), "\x00"), nil
}
