// Command execonly is the floor for a Go wrapper: it does nothing but exec
// the program named by EXECONLY_TARGET with its own arguments.
package main

import (
	"os"
	"syscall"
)

func main() {
	target := os.Getenv("EXECONLY_TARGET")
	err := syscall.Exec(target, append([]string{target}, os.Args[1:]...), os.Environ())
	os.Stderr.WriteString("execonly: " + err.Error() + "\n")
	os.Exit(127)
}
