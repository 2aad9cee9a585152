// Command mkguest writes the demo boot sector: mkguest FILE [MESSAGE].
package main

import (
	"fmt"
	"os"

	"github.com/dmlaunch/dmlaunch/internal/guest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mkguest FILE [MESSAGE]")
		os.Exit(2)
	}
	msg := "Hello from a Xen guest's serial port, through dmlaunch.\r\n"
	if len(os.Args) > 2 {
		msg = os.Args[2] + "\r\n"
	}
	b, err := guest.BootSector(guest.Options{Message: msg, Exit: true, ExitStatus: 0})
	if err == nil {
		err = os.WriteFile(os.Args[1], b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkguest:", err)
		os.Exit(1)
	}
}
