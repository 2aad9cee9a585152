package main

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

func init() {
	register(&command{
		name:  "doctor",
		args:  "[--json] [--root DIR]",
		short: "check an installation and say how to fix each problem",
		long: `Checks that dmlaunch sits at the device-model path the local toolstack
execs, that the real QEMU is found and is not dmlaunch itself, that gdbserver
and gdb are installed, that ptrace is allowed, that the state and log
directories are usable with safe modes, that the settings are valid, and
that a crashed QEMU leaves a core (kernel.core_pattern, and fs.suid_dumpable
when a running QEMU drops privileges with -runas), that a cgroup freezer can
hold QEMU for gdb-wait and strace, and what damage left in the state
directory (lease files kept aside, stale or unreadable registry records).
Reads only: nothing is created, changed or repaired.
Exit status 1 when any check fails; a warning (something that works in a
lesser way, or a leftover) does not change it.

--root checks an installation under DIR (as scripts/install.sh DESTDIR=DIR made it).`,
		example: "  dmctl doctor\n  dmctl doctor --json | jq '.[] | select(.ok | not)'",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print the checks as JSON")
			fs.String("root", "/", "check the installation under `DIR`")
		},
		run: runDoctor,
	})
}

// Check is one finding of dmctl doctor. A warning is OK, with a fix: it
// works in a lesser way, or something is left over to clean up.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Warning bool   `json:"warning,omitempty"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
}

// dmlaunchModule identifies a dmlaunch binary by its embedded build info.
const dmlaunchModule = "github.com/dmlaunch/dmlaunch/cmd/dmlaunch"

func runDoctor(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments")
	}
	root, _ := fs.GetString("root")
	checks := doctor(root)
	if j, _ := fs.GetBool("json"); j {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(checks); err != nil {
			return err
		}
	} else {
		for _, c := range checks {
			mark := "ok  "
			switch {
			case !c.OK:
				mark = "FAIL"
			case c.Warning:
				mark = "warn"
			}
			fmt.Fprintf(e.stdout, "%s %-18s %s\n", mark, c.Name, c.Detail)
			if (!c.OK || c.Warning) && c.Fix != "" {
				fmt.Fprintf(e.stdout, "     %-18s fix: %s\n", "", c.Fix)
			}
		}
	}
	for _, c := range checks {
		if !c.OK {
			return &exitCode{exitFailure}
		}
	}
	return nil
}

func isDmlaunch(path string) bool {
	bi, err := buildinfo.ReadFile(path)
	return err == nil && bi.Path == dmlaunchModule
}

func doctor(root string) []Check {
	at := func(p string) string { return filepath.Join(root, p) }
	var out []Check
	add := func(name string, ok bool, detail, fix string) {
		out = append(out, Check{Name: name, OK: ok, Detail: detail, Fix: fix})
	}

	// Settings first: they name the directories checked below.
	env := os.Environ()
	if root != "/" {
		env = append(env, "DMLAUNCH_CONFIG="+at(launcher.DefaultConfigFile))
	}
	cfg, err := launcher.LoadConfig(launcher.EnvLookup(env), env)
	if err != nil {
		add("settings", false, err.Error(), "fix the named setting in the environment or in "+launcher.DefaultConfigFile)
	} else {
		src := "defaults and the environment"
		if cfg.File != "" {
			src = cfg.File
		}
		add("settings", true, "valid ("+src+")", "")
	}

	// The device-model path the local toolstack execs.
	var dm string
	for _, p := range launcher.KnownQEMUPaths {
		if _, err := os.Stat(at(p)); err == nil {
			dm = p
			break
		}
	}
	switch {
	case dm == "":
		add("device model", false, "nothing at "+strings.Join(launcher.KnownQEMUPaths, " or "), "install qemu-system-xen (or Xen's QEMU), then scripts/install.sh")
	case !isDmlaunch(at(dm)):
		add("device model", false, dm+" is not dmlaunch: launches bypass it", "run scripts/install.sh")
	default:
		add("device model", true, dm+" is dmlaunch", "")
	}

	// The real QEMU, as dmlaunch at that path would find it.
	if dm != "" && !isDmlaunch(at(dm)) {
		add("real QEMU", true, dm+" (dmlaunch is not in front of it)", "")
	} else if dm != "" {
		var self *launcher.FileID
		if id, err := launcher.IDOf(at(dm)); err == nil {
			self = &id
		}
		setting := cfg.QEMU
		if setting != "" && root != "/" {
			setting = at(setting)
		}
		var known []string
		for _, p := range launcher.KnownQEMUPaths {
			known = append(known, at(p))
		}
		qemu, err := launcher.FindQEMUAmong(setting, []string{at(dm)}, known, self)
		switch {
		case err != nil:
			add("real QEMU", false, err.Error(), "reinstall the QEMU package and run scripts/install.sh, or set DMLAUNCH_QEMU")
		case isDmlaunch(qemu):
			add("real QEMU", false, qemu+" is a copy of dmlaunch, not QEMU", "restore the real QEMU there (scripts/uninstall.sh, reinstall the package)")
		default:
			add("real QEMU", true, qemu, "")
		}
	}

	for _, tool := range []struct{ name, bin, pkg string }{{"gdbserver", cfg.GDBServer, "gdbserver"}, {"gdb", "gdb", "gdb"}} {
		if tool.bin == "" {
			tool.bin = tool.name
		}
		if p, err := exec.LookPath(tool.bin); err != nil {
			add(tool.name, false, tool.bin+" not found", "apt-get install "+tool.pkg)
		} else {
			add(tool.name, true, p, "")
		}
	}

	// Yama: 1 limits ptrace to descendants (gdbserver is QEMU's sibling),
	// which root passes with CAP_SYS_PTRACE; 3 forbids it to everyone.
	scope := "0"
	if b, err := os.ReadFile(at("/proc/sys/kernel/yama/ptrace_scope")); err == nil {
		scope = strings.TrimSpace(string(b))
	}
	switch {
	case scope == "3":
		add("ptrace", false, "kernel.yama.ptrace_scope=3 forbids every attach", "reboot with ptrace_scope below 3 (it cannot be lowered at run time)")
	case scope != "0" && os.Geteuid() != 0:
		add("ptrace", false, "kernel.yama.ptrace_scope="+scope+" and not root", "run the toolstack as root, or sysctl kernel.yama.ptrace_scope=0")
	default:
		add("ptrace", true, "kernel.yama.ptrace_scope="+scope, "")
	}

	stateDir := cfg.StateDir
	if stateDir == "" {
		stateDir = launcher.DefaultStateDir
	}
	if root != "/" {
		stateDir = at(stateDir)
	}
	if err := statedir.Check(stateDir); err == nil {
		add("state directory", true, stateDir+" is private to uid "+fmt.Sprint(os.Geteuid()), "")
	} else if os.IsNotExist(err) {
		if werr := unix.Access(filepath.Dir(stateDir), unix.W_OK); werr == nil {
			add("state directory", true, stateDir+" will be created (0700) on the first launch", "")
		} else {
			add("state directory", false, "cannot create "+stateDir+": "+werr.Error(), "create "+filepath.Dir(stateDir)+" or set DMLAUNCH_STATE_DIR")
		}
	} else {
		add("state directory", false, err.Error(), "remove it (dmlaunch recreates it 0700) or set DMLAUNCH_STATE_DIR")
	}

	logDir := cfg.LogDir
	if logDir == "" {
		logDir = launcher.DefaultLogDir
	}
	if root != "/" {
		logDir = at(logDir)
	}
	if fi, err := os.Stat(logDir); err != nil {
		add("log directory", false, err.Error(), "mkdir -p "+logDir+" (the toolstack logs there too)")
	} else if !fi.IsDir() || unix.Access(logDir, unix.W_OK) != nil {
		add("log directory", false, logDir+" is not a writable directory", "fix its type and permissions")
	} else if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		add("log directory", false, fmt.Sprintf("%s has mode %04o (uid %d): anyone may replace console logs", logDir, fi.Mode().Perm(), st.Uid), "chmod o-w "+logDir)
	} else {
		add("log directory", true, logDir, "")
	}

	// The tools of the configured strace and memcheck modes.
	for _, need := range []struct{ mode, tool, pkg string }{
		{launcher.ModeStrace, "strace", "strace"}, {launcher.ModeMemcheck, "valgrind", "valgrind"}, {launcher.ModeMemcheck, "vgdb", "valgrind"},
	} {
		if !slices.Contains(cfg.Debug, need.mode) {
			continue
		}
		if p, err := exec.LookPath(need.tool); err != nil {
			add(need.tool, false, "DMLAUNCH_DEBUG="+need.mode+" needs "+need.tool+", which is not installed", "apt-get install "+need.pkg)
		} else {
			add(need.tool, true, p, "")
		}
	}

	for _, c := range coreChecks(at, stateDir, cfg) {
		add(c.Name, c.OK, c.Detail, c.Fix)
	}
	out = append(out, freezerCheck(at))
	return append(out, stateChecks(stateDir)...)
}

// coreChecks say whether a crashed QEMU leaves a core: where the kernel
// writes it, and whether it may at all when QEMU drops privileges. They
// advise; dmlaunch never changes these system-wide settings itself.
func coreChecks(at func(string) string, stateDir string, cfg launcher.Config) []Check {
	var out []Check
	add := func(name string, ok bool, detail, fix string) {
		out = append(out, Check{Name: name, OK: ok, Detail: detail, Fix: fix})
	}
	const absFix = "sysctl kernel.core_pattern=/var/crash/core.%e.%p.%t (an absolute directory that exists), or install systemd-coredump"
	limit := "unlimited in debug modes (DMLAUNCH_CORE_LIMIT unset)"
	if cfg.CoreLimitSet {
		limit = "DMLAUNCH_CORE_LIMIT=" + cfg.CoreLimit.String()
		if cfg.CoreLimit == 0 {
			limit += ": cores off"
		}
	}
	pat, err := coredump.ReadPattern(at("/proc/sys"))
	if err != nil {
		add("core pattern", true, "kernel.core_pattern not readable here, not checked: "+err.Error(), "")
		return out
	}
	switch pat.Kind() {
	case coredump.ToNowhere:
		add("core pattern", false, "kernel.core_pattern is empty: a crashed QEMU leaves no core", absFix)
	case coredump.ToHandler, coredump.ToSocket:
		h := pat.Handler()
		switch {
		case pat.Kind() == coredump.ToHandler && unix.Access(at(h), unix.X_OK) != nil:
			add("core pattern", false, "kernel.core_pattern pipes cores to "+h+", which is not there: cores are lost", "reinstall "+h+"'s package, or "+absFix)
		case filepath.Base(h) == "systemd-coredump":
			add("core pattern", true, "cores go to systemd-coredump, which dmlaunch asks by pid (coredumpctl); "+limit, "")
		default:
			add("core pattern", true, "cores go to "+h+", which keeps them; dmlaunch records that; "+limit, "")
		}
	default:
		dir := filepath.Dir(pat.Raw)
		switch {
		case !filepath.IsAbs(pat.Raw):
			add("core pattern", true, fmt.Sprintf("kernel.core_pattern=%q: cores are written in QEMU's working directory (the toolstack's) and dmlaunch moves each beside the console log; %s", pat.Raw, limit), "")
		case strings.Contains(dir, "%"):
			add("core pattern", true, fmt.Sprintf("kernel.core_pattern=%q; %s", pat.Raw, limit), "")
		case unix.Access(at(dir), unix.W_OK) != nil:
			add("core pattern", false, fmt.Sprintf("kernel.core_pattern=%q, but %s is not a writable directory: cores are lost", pat.Raw, dir), "mkdir -p "+dir+", or "+absFix)
		default:
			add("core pattern", true, fmt.Sprintf("kernel.core_pattern=%q: cores are written in %s and renamed by domain; %s", pat.Raw, dir, limit), "")
		}
	}

	// QEMU's -runas (libxl's dm_restrict) drops privileges without
	// PR_SET_DUMPABLE: the kernel then dumps only with suid_dumpable 2,
	// and then only to an absolute path or a pipe.
	suid := "0"
	if b, err := os.ReadFile(at("/proc/sys/fs/suid_dumpable")); err == nil {
		suid = strings.TrimSpace(string(b))
	}
	runas := runAsInUse(stateDir)
	switch {
	case runas != "" && suid == "0":
		add("suid dumpable", false, "fs.suid_dumpable=0 and "+runas+" runs QEMU with -runas: its crashes leave no core",
			"sysctl fs.suid_dumpable=2, with an absolute kernel.core_pattern or a pipe handler")
	case runas != "" && suid == "2" && pat.Kind() == coredump.ToFile && !filepath.IsAbs(pat.Raw):
		add("suid dumpable", false, "fs.suid_dumpable=2 ignores the relative kernel.core_pattern for "+runas+", which runs QEMU with -runas", absFix)
	case runas != "":
		add("suid dumpable", true, "fs.suid_dumpable="+suid+": QEMU under -runas ("+runas+") can dump core", "")
	default:
		add("suid dumpable", true, "fs.suid_dumpable="+suid+"; no running launch uses -runas (with dm_restrict=1, cores need fs.suid_dumpable=2)", "")
	}
	return out
}

// runAsInUse names a running launch whose QEMU drops privileges, if any.
func runAsInUse(stateDir string) string {
	entries, _ := inventory.List(stateDir)
	for _, en := range entries {
		if en.State.Gone() {
			continue
		}
		for i, a := range en.Argv {
			a = "-" + strings.TrimLeft(a, "-")
			if a == "-runas" || a == "-run-with" && i+1 < len(en.Argv) && strings.Contains(en.Argv[i+1], "user=") {
				return fmt.Sprintf("domain %d", en.Domid)
			}
		}
	}
	return ""
}

// freezerCheck says whether gdb-wait and strace can hold QEMU before its
// first instruction in a cgroup freezer, as gdbwrap.HoldAtExec does: in a
// hold cgroup made inside the launcher's own cgroup, of the v2 hierarchy
// (cgroup.freeze) or else the v1 freezer hierarchy (freezer.state). It
// looks from dmctl's own cgroups; a launcher makes its hold cgroup in its
// own, the toolstack's.
func freezerCheck(at func(string) string) Check {
	const name = "freezer"
	mountinfo := at("/proc/self/mountinfo")
	if _, err := os.Stat(mountinfo); err != nil {
		return Check{Name: name, OK: true, Detail: "cgroups not readable here, not checked: " + err.Error()}
	}
	var why []string
	for _, h := range []struct {
		version int
		method  string
	}{{2, gdbwrap.HoldCgroupV2}, {1, gdbwrap.HoldCgroupV1}} {
		dir, err := gdbwrap.CgroupDir(at("/proc/self/cgroup"), mountinfo, h.version)
		if err != nil {
			why = append(why, h.method+": "+err.Error())
			continue
		}
		dir = at(dir)
		if err := unix.Access(dir, unix.W_OK); err != nil {
			why = append(why, fmt.Sprintf("%s: %s is not writable (%v)", h.method, dir, err))
			continue
		}
		if h.version == 2 && !v2Freezes(at, dir) {
			why = append(why, h.method+": this kernel has no cgroup.freeze (Linux 5.2 and later have it)")
			continue
		}
		return Check{Name: name, OK: true, Detail: fmt.Sprintf("%s: gdb-wait and strace hold QEMU in a cgroup made in %s (seen from dmctl's own cgroup)", h.method, dir)}
	}
	return Check{Name: name, OK: true, Warning: true,
		Detail: "no writable cgroup freezer (" + strings.Join(why, "; ") + "): gdb-wait and strace hold QEMU in a job-control stop instead, " +
			"and a debugger sees one SIGCONT when QEMU is released (gdb: Program received signal SIGCONT; continue goes on)",
		Fix: "mount the v1 freezer (mkdir -p /sys/fs/cgroup/freezer && mount -t cgroup -o freezer freezer /sys/fs/cgroup/freezer), " +
			"or run on cgroup v2 with the toolstack's cgroup delegated to it and writable (systemd: Delegate=yes on its service)"}
}

// v2Freezes tells whether a cgroup made in dir has cgroup.freeze. A
// non-root cgroup shows it itself; the root has none, and then the
// kernel's version says.
func v2Freezes(at func(string) string, dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
		return true
	}
	b, err := os.ReadFile(at("/proc/sys/kernel/osrelease"))
	if err != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 5 || major == 5 && minor >= 2
}

// stateChecks report what damage left in the state directory: lease
// files kept aside, a lease file the next launch will rebuild, stale and
// unreadable registry records. They read only, as dmctl list does.
func stateChecks(stateDir string) []Check {
	if statedir.Check(stateDir) != nil {
		return nil // the state directory check says why
	}
	var out []Check

	lease := Check{Name: "lease file", OK: true, Detail: "sound"}
	var notes, fixes []string
	if st, err := launcher.NewAllocator(stateDir, launcher.EnvLookup(os.Environ())).List(); err != nil {
		notes = append(notes, "cannot be read: "+err.Error())
	} else if st.Damage != "" {
		notes = append(notes, st.Damage)
		fixes = append(fixes, "dmctl prune repairs it now")
	}
	var aside []string
	for _, pattern := range []string{domid.LeaseFile + ".damaged.*", domid.LeaseFile + ".lock.damaged.*"} {
		m, _ := filepath.Glob(filepath.Join(stateDir, pattern))
		aside = append(aside, m...)
	}
	if len(aside) > 0 {
		slices.Sort(aside)
		notes = append(notes, fmt.Sprintf("%d damaged lease files kept aside when the lease file was rebuilt from the registry (the newest %s)",
			len(aside), cell(aside[len(aside)-1])))
		fixes = append(fixes, "read them for what damaged the lease file (a full disk, a hand edit), then remove them: rm "+
			filepath.Join(stateDir, domid.LeaseFile)+".*damaged.*; nothing else reads them")
	}
	if len(notes) > 0 {
		lease.Warning, lease.Detail, lease.Fix = true, strings.Join(notes, "; "), strings.Join(fixes, "; ")
	}
	out = append(out, lease)

	listing, err := inventory.Scan(stateDir)
	if err != nil {
		return append(out, Check{Name: "registry", OK: false, Detail: err.Error(), Fix: "fix the state directory's permissions"})
	}
	live, starting, ended, stale, unknown := 0, 0, 0, []string{}, []string{}
	for _, en := range listing.Entries {
		switch en.State {
		case registry.Unknown:
			unknown = append(unknown, fmt.Sprintf("domain %d: %s", en.Domid, cell(en.Unknown)))
		case registry.Stale:
			stale = append(stale, strconv.Itoa(en.Domid))
		case registry.Starting:
			starting++
		case registry.Ended:
			ended++
		default:
			live++
		}
	}
	reg := Check{Name: "registry", OK: true, Detail: fmt.Sprintf("%d records of running launches", live)}
	if starting > 0 {
		reg.Detail += fmt.Sprintf(", %d starting", starting)
	}
	if ended > 0 {
		// How a pass-through launch ends: not damage, no warning.
		reg.Detail += fmt.Sprintf(", %d of ended pass-through launches (later guest launches remove them)", ended)
	}
	if len(stale) > 0 {
		reg.Warning = true
		reg.Detail += fmt.Sprintf("; %d stale records, their debug-mode launchers gone without removing them (domains %s): harmless, a launch of the domain replaces its own",
			len(stale), strings.Join(stale, " "))
		reg.Fix = "dmctl prune removes them"
	}
	if len(unknown) > 0 {
		reg.Warning = true
		reg.Detail += fmt.Sprintf("; %d records of daemonized QEMUs that can be neither followed nor proved gone, kept: %s",
			len(unknown), strings.Join(unknown, "; "))
		fix := "a pidfile that QEMU writes itself is a regular file of root's, writable by root alone; once that QEMU is gone, remove the record by hand"
		if reg.Fix != "" {
			fix = reg.Fix + "; " + fix
		}
		reg.Fix = fix
	}
	if len(listing.Bad) > 0 {
		var names []string
		for _, b := range listing.Bad {
			names = append(names, cell(b.Error()))
		}
		reg.OK, reg.Warning = false, false
		reg.Detail += fmt.Sprintf("; %d records cannot be read and are skipped by every command: %s", len(listing.Bad), strings.Join(names, "; "))
		reg.Fix = "dmctl prune --bad removes them (and the stale ones); nothing says whose they are, so look first"
	}
	return append(out, reg)
}
