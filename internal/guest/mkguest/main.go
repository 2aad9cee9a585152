// Command mkguest writes the demo boot sector: mkguest [-park] FILE [MESSAGE].
// Without -park the guest ends QEMU through isa-debug-exit; with it the
// guest idles forever after its message, as a Xen HVM guest must.
package main

import (
	"fmt"
	"os"

	"github.com/dmlaunch/dmlaunch/internal/guest"
)

func main() {
	args := os.Args[1:]
	park := len(args) > 0 && args[0] == "-park"
	if park {
		args = args[1:]
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: mkguest [-park] FILE [MESSAGE]")
		os.Exit(2)
	}
	msg := "Hello from a Xen guest's serial port, through dmlaunch.\r\n"
	if len(args) > 1 {
		msg = args[1] + "\r\n"
	}
	o := guest.Options{Message: msg, Exit: !park, ExitStatus: 0, Park: park}
	b, err := guest.BootSector(o)
	if err == nil {
		err = os.WriteFile(args[0], b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkguest:", err)
		os.Exit(1)
	}
}
