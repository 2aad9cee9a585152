package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

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

--print prints the commands for another machine instead, with the ssh -L line
that reaches a port listening on loopback only. There gdb reads QEMU's binary
and libraries from the target (set sysroot target:, the default), which is slow
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

// gdbArgs are the gdb options that attach to the domain's debug port.
func gdbArgs(rec inventory.Entry, local bool) []string {
	var args []string
	args = append(args, "-q")
	if local {
		args = append(args, "-ex", "set sysroot /")
	}
	if strings.Contains(rec.Mode, "gdb-wait") {
		// The SIGCONT that released QEMU's start-up stop is reported once.
		args = append(args, "-ex", "handle SIGCONT nostop noprint")
	}
	args = append(args, "-ex", "target remote "+rec.GDB)
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
	return syscall.Exec(path, append([]string{path}, gdbArgs(rec, true)...), os.Environ())
}

func printGDB(e *env, rec inventory.Entry, gdb, host string) {
	ap, err := netip.ParseAddrPort(rec.GDB)
	fmt.Fprintf(e.stdout, "# Domain %d (%s): QEMU pid %d, debug port %s, mode %s.\n", rec.Domid, rec.Name, rec.QEMUPID, rec.GDB, rec.Mode)
	target := rec
	if err == nil && ap.Addr().IsLoopback() {
		port := strconv.Itoa(int(ap.Port()))
		fmt.Fprintf(e.stdout, "# The port listens on loopback only. From another machine, forward it first:\n")
		fmt.Fprintf(e.stdout, "#   ssh -N -L %s:127.0.0.1:%s root@%s &\n", port, port, host)
		target.GDB = "127.0.0.1:" + port
	}
	fmt.Fprintf(e.stdout, "%s\n", shellquote.Join(append([]string{gdb}, gdbArgs(target, false)...)))
}
