package main

import (
	"fmt"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/registry"
)

// lookup finds the live launch of a domain, or says why there is none.
// Other domains' records, readable or not, do not matter.
func lookup(e *env, arg string) (inventory.Entry, error) {
	d, err := domid.Parse(domid.Candidate{Source: "argument", Value: arg})
	if err != nil {
		return inventory.Entry{}, usagef("%v", err)
	}
	listing, err := inventory.Scan(e.stateDir)
	if err != nil {
		return inventory.Entry{}, err
	}
	entries, bad := listing.Find(d)
	var gone *inventory.Entry
	for i, en := range entries {
		if en.Kind == "qdisk" {
			continue
		}
		switch en.State {
		case registry.Starting:
			return en, fmt.Errorf("domain %d: its launch (launcher pid %d) is starting and QEMU does not run yet; try again once dmctl list shows it running",
				d, en.Launcher.PID)
		case registry.Running:
			return en, nil
		}
		gone = &entries[i]
	}
	switch {
	case gone != nil && gone.State == registry.Ended:
		return *gone, fmt.Errorf("domain %d: its pass-through launch has ended, its QEMU (pid %d) exited; no device model of dmlaunch runs for it (a later guest launch or dmctl prune removes the record %s)",
			d, gone.Launcher.PID, gone.Path)
	case gone != nil:
		return *gone, fmt.Errorf("domain %d: its launcher (pid %d) is gone; the record %s is stale (dmctl prune removes it; a new launch replaces it)",
			d, gone.Launcher.PID, gone.Path)
	}
	if len(bad) > 0 {
		return inventory.Entry{}, fmt.Errorf("domain %d: %v", d, bad[0])
	}
	return inventory.Entry{}, fmt.Errorf("domain %d: no launch recorded in %s; dmctl list shows what dmlaunch started", d, e.stateDir)
}
