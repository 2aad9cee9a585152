package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/gdbwrap"
)

// whyNotAnswering says why the process pid cannot answer its monitor, or ""
// when it is not held: stopped under a debugger (ptrace), stopped by a
// signal, or frozen in a cgroup (how gdb-wait holds QEMU before its first
// instruction). Its socket still accepts connections in every case: the
// kernel queues them, and nobody reads.
func whyNotAnswering(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	var state string
	tracer := 0
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			state = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			tracer, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	switch {
	case strings.HasPrefix(state, "t") && tracer != 0:
		return fmt.Sprintf("QEMU (pid %d) is stopped in a debugger (%s, pid %d): its monitor answers once the debugger lets it run (gdb: continue, or detach)",
			pid, commOf(tracer), tracer)
	case strings.HasPrefix(state, "T"), strings.HasPrefix(state, "t"):
		return fmt.Sprintf("QEMU (pid %d) is stopped (%s): its monitor answers once it runs again (kill -CONT %d)", pid, state, pid)
	}
	if cg := gdbwrap.FrozenCgroup(pid); cg != "" {
		return fmt.Sprintf("QEMU (pid %d) is held frozen in cgroup %s, waiting for a debugger (gdb-wait): its monitor answers once a debugger has let it start", pid, cg)
	}
	return ""
}

func commOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "pid " + strconv.Itoa(pid)
	}
	return strings.TrimSpace(string(b))
}
