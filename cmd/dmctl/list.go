package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "list",
		args:  "[--all] [--json]",
		short: "list the device models dmlaunch launched",
		long: `One line per registry record in the state directory, with its state:
running; starting, a debug-mode launch whose QEMU has not started yet (its
record has no QEMU pid); stale, a debug-mode launch whose launcher is gone
(its pid no longer runs with the same start time) without removing its
record, which is damage that dmctl prune removes; ended, a pass-through
launch whose QEMU has exited. A pass-through launch execs QEMU in place, so
an exited QEMU (xl destroy) is how it ends: its record is left out unless
--all is given, and a later guest launch or dmctl prune removes it. A
pass-through QEMU started with -daemonize and -pidfile runs on as the pid in
its pidfile, which is shown when that process holds QEMU's lock on the
file; unknown is such a launch that can be neither followed nor proved gone
(its pidfile cannot be trusted, or another process holds it): its record is
kept, and why is said on standard error. In JSON, state is the precise
field; stale is true for every launch that is gone (ended or stale). A record that cannot be read (damaged,
oversized, a symbolic link, a device, another user's file) is named on
standard error and skipped; the others are listed. Control characters in
names and paths are shown escaped (\t, \n, \x1b), so each launch stays on one
line.
Reads only: nothing in the state directory is created or changed.`,
		example: "  dmctl list\n  dmctl list --all\n  dmctl list --json | jq '.[] | select(.state == \"running\") | .domid'",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("all", false, "also list ended pass-through launches")
			fs.Bool("json", false, "print JSON, one object per launch")
		},
		run: runList,
	})
	register(&command{
		name:  "argv",
		args:  "-- QEMU-ARGS...",
		short: "show what dmlaunch would run for a command line, and why",
		long: `Prints the domid and where it comes from, the kind of invocation, the mode,
the real QEMU and the final argv, one word per line, exactly as a launch with
DMLAUNCH_DRY_RUN=1 would. The settings come from the environment and the
settings file, as for dmlaunch.`,
		example: "  dmctl argv -- -xen-domid 5 -name web1 -machine xenfv -serial pty",
		rawArgs: true,
		run:     runArgv,
	})
}

func runList(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments")
	}
	listing, err := inventory.Scan(e.stateDir)
	if err != nil {
		return err
	}
	for _, bad := range listing.Bad {
		fmt.Fprintf(e.stderr, "dmctl list: skipped: %s\n", cell(bad.Error()))
	}
	all, _ := fs.GetBool("all")
	entries := []inventory.Entry{}
	for _, en := range listing.Entries {
		if all || en.State != registry.Ended {
			entries = append(entries, en)
		}
	}
	if j, _ := fs.GetBool("json"); j {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	var t table
	t.add("DOMID", "NAME", "KIND", "MODE", "QEMU PID", "UPTIME", "GDB", "CONSOLE", "STATE")
	stale := 0
	for _, en := range entries {
		uptime, pid := time.Since(en.Started).Truncate(time.Second).String(), strconv.Itoa(en.PID())
		if en.State != registry.Running {
			uptime = "-"
		}
		if en.State == registry.Stale {
			stale++
		}
		if en.State == registry.Unknown {
			fmt.Fprintf(e.stderr, "dmctl list: domain %d: state unknown, record kept: %s\n", en.Domid, cell(en.Unknown))
		}
		if en.PID() == 0 { // recorded before QEMU started
			pid = "-"
		}
		t.add(strconv.Itoa(en.Domid), dash(en.Name), en.Kind, en.Mode,
			pid, uptime, dash(en.GDB), dash(en.ConsolePTY), string(en.State))
	}
	if err := t.write(e.stdout); err != nil {
		return err
	}
	if stale > 0 {
		fmt.Fprintf(e.stderr, "dmctl list: %d stale records (their debug-mode launcher is gone without removing them); dmctl prune removes them\n", stale)
	}
	return nil
}

func runArgv(e *env, _ *pflag.FlagSet, args []string) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	in := launcher.Inputs{Args: append([]string{"dmlaunch"}, args...), Environ: os.Environ()}
	p, err := launcher.Prepare(in)
	if err != nil {
		launcher.Report(e.stderr, p, err)
		return &exitCode{launcher.ExitCode(err)}
	}
	p.Describe(e.stdout)
	return nil
}
