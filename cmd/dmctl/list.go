package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "list",
		args:  "[--json]",
		short: "list the device models dmlaunch launched",
		long: `One line per registry record in the state directory. A record whose launcher
is gone (its pid no longer runs with the same start time) is shown as stale.`,
		example: "  dmctl list\n  dmctl list --json | jq '.[] | select(.stale | not) | .domid'",
		flags: func(fs *pflag.FlagSet) {
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
	entries, err := inventory.List(e.stateDir)
	if err != nil {
		return err
	}
	if j, _ := fs.GetBool("json"); j {
		if entries == nil {
			entries = []inventory.Entry{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMID\tNAME\tKIND\tMODE\tQEMU PID\tUPTIME\tGDB\tCONSOLE\tSTATE")
	for _, en := range entries {
		state, uptime := "running", time.Since(en.Started).Truncate(time.Second).String()
		if en.Stale {
			state, uptime = "stale", "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", en.Domid, dash(en.Name), en.Kind, en.Mode,
			en.QEMUPID, uptime, dash(en.GDB), dash(en.ConsolePTY), state)
	}
	return tw.Flush()
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
