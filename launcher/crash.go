package launcher

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/internal/coredump"
)

// raiseCoreLimit gives QEMU the core size limit (unlimited by default): a
// core cut at the toolstack's limit is useless to gdb. A limit that
// cannot be raised as far as asked is said, and the launch goes on.
func (s *supervision) raiseCoreLimit() error {
	s.restoreCoreLimit = coredump.Keep()
	got, err := s.p.Config.CoreLimit.Apply()
	if err != nil {
		s.logf("%v", err)
	}
	s.coreLimit = got
	return nil
}

// lowerCoreLimit comes right after QEMU started with the raised limit:
// the helpers started later (gdbserver, strace, gdb) keep the
// toolstack's, so that a crashing helper does not leave a core behind.
func (s *supervision) lowerCoreLimit() error {
	if err := s.restoreCoreLimit(); err != nil {
		s.logf("core size limit not restored for the helpers: %v", err)
	}
	return nil
}

// keepCore runs once QEMU has been reaped (the kernel has finished
// writing its core by then) and no debugger holds it: for a QEMU killed
// by a core-dumping signal it finds the core, names it by domain, guest
// and time, and writes the crash record.
func (s *supervision) keepCore() error {
	ws := s.qemu.status
	if !ws.Signaled() || !coredump.CoreSignal(ws.Signal()) {
		return nil
	}
	p := s.p
	launcherDir, _ := os.Getwd()
	chroot, daemonize, runAs := privilegeOptions(p.Line)
	dir, root := coredump.WorkingDir(launcherDir, chroot, daemonize)
	toolCore := ""
	if s.command != nil && s.toolLog != "" { // valgrind: "<log file>.core.<pid>"
		toolCore = s.toolLog + ".core." + strconv.Itoa(s.qemu.pid())
	}
	var c coredump.Collector
	cr := c.Collect(coredump.Launch{
		Domid: p.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode, QEMU: p.QEMU,
		PID: s.qemu.pid(), Started: s.started, Dir: dir, Root: root, LogDir: p.Config.LogDir,
		Limit: s.coreLimit, RunAs: runAs, ToolCore: toolCore,
	}, ws.Signal(), ws.CoreDump())
	s.crash = &cr
	if err := cr.Save(); err != nil {
		s.logf("crash record not written: %v", err)
	}
	return nil
}

// backtraceCore appends every thread's backtrace from the core to the
// toolstack's log, bounded in lines and time.
func (s *supervision) backtraceCore() error {
	cr := s.crash
	if cr == nil || cr.Core == "" {
		return nil
	}
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		s.logf("no backtrace: gdb is not installed (apt-get install gdb); the core stays for dmctl gdb %d --core", s.p.Domid)
		return nil
	}
	tr, err := coredump.Backtrace(context.Background(), gdb, s.p.QEMU, cr.Core)
	for _, line := range tr.Lines {
		s.logf("backtrace: %s", line)
	}
	if tr.Cut > 0 {
		s.logf("backtrace: %d more lines left out; dmctl gdb %d --core has them all", tr.Cut, s.p.Domid)
	}
	if err != nil {
		s.logf("backtrace: %v", err)
	}
	cr.Backtrace = len(tr.Lines)
	if err := cr.Save(); err != nil {
		s.logf("crash record not written: %v", err)
	}
	return nil
}

// privilegeOptions reads the options that change where QEMU's core goes
// or whether it may dump at all: -chroot, -daemonize, -runas, and QEMU
// 9's -run-with chroot=...,user=....
func privilegeOptions(cl argv.CommandLine) (chroot string, daemonize, runAs bool) {
	chroot, _ = cl.Last("chroot")
	runAs = cl.Has("runas")
	for _, v := range cl.Values("run-with") {
		for _, kv := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "chroot":
				chroot = val
			case "user":
				runAs = true
			}
		}
	}
	return chroot, cl.Has("daemonize"), runAs
}
