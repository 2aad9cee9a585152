package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "prune",
		args:  "[--bad] [--dry-run]",
		short: "remove the records of launches that are gone, and leftovers",
		long: `Removes the registry records of launches that are gone, with their QMP
sockets: ended pass-through launches (their QEMU exited, as every one does
at xl destroy; later guest launches remove them too) and stale debug-mode ones
(their launcher is gone without removing its record). Also removes the
temporary files of writers that were killed, and the leases of holders that
are gone (their domids cool down as usual). A damaged or missing lease file
is repaired as a launch would: rebuilt from the live launches' records, the
damaged file kept as domids.damaged.<time>.

Records that cannot be read (damaged, oversized, a symbolic link, a device,
another user's file) are only named, unless --bad is given: nothing says
whose they are, so removing them is the operator's call.`,
		example: "  dmctl prune --dry-run\n  dmctl prune",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("bad", false, "also remove records that cannot be read")
			fs.Bool("dry-run", false, "say what would be removed, remove nothing")
		},
		run: runPrune,
	})
}

func runPrune(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments")
	}
	bad, _ := fs.GetBool("bad")
	dry, _ := fs.GetBool("dry-run")
	if err := statedir.Check(e.stateDir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(e.stdout, "nothing to prune: %s does not exist\n", e.stateDir)
			return nil
		}
		return err
	}
	listing, err := inventory.Scan(e.stateDir)
	if err != nil {
		return err
	}
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	removed, failed := 0, 0
	for _, en := range listing.Entries {
		if !en.State.Gone() {
			continue
		}
		done := true
		if !dry {
			if done, err = listing.RemoveGone(en); err != nil {
				fmt.Fprintf(e.stderr, "dmctl prune: %s: %v\n", en.Path, err)
				failed++
				continue
			}
		}
		if done {
			removed++
			why := fmt.Sprintf("launcher pid %d gone", en.Launcher.PID)
			if en.State == registry.Ended {
				why = fmt.Sprintf("ended, its QEMU (pid %d) exited", en.Launcher.PID)
				if pf := en.DaemonPIDFile(); pf != "" {
					// The pid dmlaunch exec'd exited once the daemon
					// ran: the daemon's is the one that matters.
					why = fmt.Sprintf("ended, its daemonized QEMU (pidfile %s) exited", cell(pf))
					if en.DaemonPID != 0 {
						why = fmt.Sprintf("ended, its daemonized QEMU (pid %d, pidfile %s) exited", en.DaemonPID, cell(pf))
					}
				}
			}
			fmt.Fprintf(e.stdout, "%s %s: domain %d (%s), %s\n", verb, en.Path, en.Domid, cell(dash(en.Name)), why)
		}
	}
	for _, b := range listing.Bad {
		if !bad {
			fmt.Fprintf(e.stderr, "dmctl prune: kept: %s (--bad removes it)\n", cell(b.Error()))
			continue
		}
		if !dry {
			if err := os.Remove(b.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(e.stderr, "dmctl prune: %v\n", err)
				failed++
				continue
			}
		}
		removed++
		fmt.Fprintf(e.stdout, "%s %s: %s\n", verb, b.Path, cell(b.Reason))
	}
	if !dry {
		left, err := atomicfile.RemoveLeftovers(e.stateDir)
		for _, n := range left {
			removed++
			fmt.Fprintf(e.stdout, "removed %s: a temporary file whose writer was killed\n", cell(n))
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "dmctl prune: %v\n", err)
			failed++
		}
		st, err := allocator(e).Reap()
		if err != nil {
			return fmt.Errorf("leases: %w", err)
		}
		fmt.Fprintf(e.stdout, "leases: %d held by live launches, %d domids cooling down\n", len(st.Leases), len(st.Released))
	}
	fmt.Fprintf(e.stdout, "%s %d files\n", verb, removed)
	if failed > 0 {
		return &exitCode{exitFailure}
	}
	return nil
}
