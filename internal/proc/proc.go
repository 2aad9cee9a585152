// Package proc identifies processes by pid and start time, so that a
// recycled pid is never mistaken for the process that once had it.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Identity names one process for its whole life.
type Identity struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat: clock ticks after boot.
	StartTime uint64 `json:"start_time"`
}

// StartTime reads a process's start time.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start behind the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); the start time is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields, want at least 22", pid, len(f)+2)
	}
	return strconv.ParseUint(string(f[19]), 10, 64)
}

// Self is the calling process's identity.
func Self() (Identity, error) {
	pid := os.Getpid()
	st, err := StartTime(pid)
	return Identity{PID: pid, StartTime: st}, err
}

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
	st, err := StartTime(id.PID)
	if err != nil || st != id.StartTime {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(id.PID) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
