// Command dmlaunch stands in for the device model the Xen toolstack
// starts: it decides the domid and the final QEMU command line, then execs
// the real QEMU in place, or runs it under a debugger when
// DMLAUNCH_DEBUG says so. See dmlaunch(8).
package main

import (
	"os"

	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/launcher"
)

func main() {
	// A launcher holding QEMU at its first instruction runs a copy of
	// itself as the hold's guard (see gdbwrap.Hold).
	if gdbwrap.IsHoldGuard(os.Args) {
		os.Exit(gdbwrap.RunHoldGuard(os.Args))
	}
	os.Exit(launcher.Main(launcher.CurrentInputs(), os.Stdout, os.Stderr))
}
