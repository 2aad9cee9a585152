package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "gdb",
		args:  "DOMID [--print] [--host HOST] [--core]",
		short: "debug a domain's QEMU with gdb, through its debug port",
		long: `Runs the local gdb already attached: QEMU's binary loaded for symbols,
"set sysroot /", "target remote" on the domain's debug port. Leave with
"detach" (QEMU runs on) or quit.

--print prints the commands for another machine instead, every value
shell-quoted: the ssh -L line that reaches a port listening on loopback or on
the unix socket, or the host name for a port listening on every address; the
gdb line works on this machine too; gdb reaches the unix socket by its path
(target remote /run/dmlaunch/5.gdb, gdb 8.3 and later). On another machine gdb
reads QEMU's binary and libraries from the target (set sysroot target:, the default), which is slow
the first time; install the same QEMU build and its -dbgsym package locally
for speed and symbols.

--core opens the domain's newest core instead (the domain need not run): gdb
with the real QEMU binary that dumped it, warning when that binary has been
replaced since.`,
		example: "  dmctl gdb 5\n  dmctl gdb 5 --print --host xenhost1\n  dmctl gdb 5 --core",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("print", false, "print the commands instead of running gdb")
			fs.String("host", "", "this machine's name in the printed ssh line (default: the host name)")
			fs.String("gdb", "gdb", "the gdb `BINARY`")
			fs.Bool("core", false, "open the domain's newest core (see dmctl crashes) instead, with the QEMU that dumped it")
			fs.String("log-dir", "", "with --core: where the crash records are (`DIR`; default: DMLAUNCH_LOG_DIR)")
		},
		run: runGDB,
	})
}

// gdbArgs are the gdb options that attach to target.
func gdbArgs(rec inventory.Entry, target string, local bool) []string {
	args := []string{"-q"}
	if local {
		args = append(args, "-ex", "set sysroot /")
	}
	args = append(args, "-ex", "target remote "+target)
	if local {
		args = append(args, rec.QEMU)
	}
	return args
}

func runGDB(e *env, fs *pflag.FlagSet, args []string) error {
	if core, _ := fs.GetBool("core"); core {
		return runCoreGDB(e, fs, args)
	}
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	rec, err := lookup(e, args[0])
	if err != nil {
		return err
	}
	if rec.GDB == "" {
		return fmt.Errorf("domain %d runs in %s mode, without a debug port; launch it with DMLAUNCH_DEBUG=gdb (or gdb-wait)", rec.Domid, rec.Mode)
	}
	gdb, _ := fs.GetString("gdb")
	if p, _ := fs.GetBool("print"); p {
		host, _ := fs.GetString("host")
		if host == "" {
			host, _ = os.Hostname()
		}
		printGDB(e, rec, gdb, host)
		return nil
	}
	path, err := exec.LookPath(gdb)
	if err != nil {
		return fmt.Errorf("%s not found: install gdb, or use --print and debug from another machine", gdb)
	}
	// gdb takes over the terminal: exec, so nothing sits between.
	return syscall.Exec(path, append([]string{path}, gdbArgs(rec, gdbwrap.LocalTarget(rec.GDB), true)...), os.Environ())
}

func printGDB(e *env, rec inventory.Entry, gdb, host string) {
	for _, line := range printLines(rec, gdb, host) {
		fmt.Fprintln(e.stdout, line)
	}
}

// printLines are --print's lines: comments that say where each command
// runs (a forward over ssh first when the port is not reachable from
// another machine), and one gdb command line, which works on this machine
// too. Every value is shell-quoted; values in comments are Go-quoted, so
// a name cannot end the comment.
func printLines(rec inventory.Entry, gdb, host string) []string {
	lines := []string{fmt.Sprintf("# Domain %d (%s): QEMU pid %d, debug port %s, mode %s.", rec.Domid, strconv.Quote(rec.Name), rec.QEMUPID, strconv.Quote(rec.GDB), strconv.Quote(rec.Mode))}
	gdbLine := func(target string) string {
		return shellquote.Join(append([]string{gdb}, gdbArgs(rec, target, false)...))
	}
	forward := func(spec string) string {
		return "#   " + shellquote.Join([]string{"ssh", "-N", "-L", spec, "root@" + host}) + " &"
	}
	if gdbwrap.IsUnixTarget(rec.GDB) {
		path := rec.GDB
		port := strconv.Itoa(unixForwardBase + rec.Domid)
		lines = append(lines,
			"# The port is a unix socket, for root on this machine. From another machine, forward it first:",
			forward(port+":"+path),
			"# and there: "+gdbLine("127.0.0.1:"+port),
			"# Here:",
			gdbLine(rec.GDB))
		return lines
	}
	ap, err := netip.ParseAddrPort(rec.GDB)
	if err != nil {
		return append(lines, gdbLine(rec.GDB))
	}
	port := strconv.Itoa(int(ap.Port()))
	switch addr := ap.Addr().Unmap(); {
	case addr.IsLoopback():
		lines = append(lines,
			"# The port listens on loopback only. From another machine, forward it first:",
			forward(port+":"+netip.AddrPortFrom(addr, ap.Port()).String()))
		return append(lines, gdbLine("127.0.0.1:"+port))
	case addr.IsUnspecified():
		remote := net.JoinHostPort(host, port)
		lines = append(lines,
			"# The port listens on every address; from a machine on a network in DMLAUNCH_GDB_ALLOW:",
			"#   "+gdbLine(remote),
			"# Here:")
		return append(lines, gdbLine(gdbwrap.LocalTarget(rec.GDB)))
	}
	lines = append(lines, "# From a machine on a network in DMLAUNCH_GDB_ALLOW, and here:")
	return append(lines, gdbLine(rec.GDB))
}

// unixForwardBase is the local port --print suggests for forwarding a
// domain's unix socket: the default base port, plus the domid.
const unixForwardBase = 1234
