// Command dmctl is the operator's tool for the device models dmlaunch
// started: list them, manage domid leases, and show what dmlaunch would
// run. See dmctl(8).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
)

// version is set at link time by the Makefile.
var version = ""

// Exit statuses.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake on the command line: exit 2 and a pointer to
// --help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

type env struct {
	stateDir string
	stdout   io.Writer
	stderr   io.Writer
	stdin    *os.File
}

type command struct {
	name    string
	args    string
	short   string
	long    string
	example string
	flags   func(fs *pflag.FlagSet)
	run     func(e *env, fs *pflag.FlagSet, args []string) error
	// rawArgs passes everything after the command untouched (for argv).
	rawArgs bool
}

var commands []*command

func register(c *command) { commands = append(commands, c) }

func find(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// defaultStateDir is the state directory dmlaunch uses: DMLAUNCH_STATE_DIR
// from the environment or the settings file, whatever other settings are
// wrong (dmctl doctor reports those). It is an error only when that very
// setting is unusable, or the file that may hold it cannot be read.
func defaultStateDir() (string, error) {
	cfg, _ := launcher.LoadConfig(os.LookupEnv, os.Environ())
	if p := cfg.StateDirProblem(); p != nil {
		return "", usagef("%v; give --state-dir, or fix the setting", p)
	}
	return cfg.StateDir, nil
}

// stateless commands do not read the state directory, so a bad
// DMLAUNCH_STATE_DIR does not stop them.
var stateless = []string{"argv", "doctor", "version"}

func mainUsage(w io.Writer) {
	fmt.Fprintf(w, `Usage: dmctl [--state-dir DIR] COMMAND [ARGS]

dmctl lists and reaches the Xen device models that dmlaunch started.

Commands:
`)
	sorted := append([]*command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, `
Global options:
  --state-dir DIR   leases, registry and sockets (default: DMLAUNCH_STATE_DIR, or /run/dmlaunch)
  -h, --help        this help; "dmctl COMMAND --help" for a command's

Exit status: 0 success, 1 failure, 2 usage error.
See dmctl(8) and dmlaunch(8).
`)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Stdin))
}

func run(args []string, stdout, stderr io.Writer, stdin *os.File) int {
	e := &env{stdout: stdout, stderr: stderr, stdin: stdin}
	global := pflag.NewFlagSet("dmctl", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(io.Discard)
	global.StringVar(&e.stateDir, "state-dir", "", "")
	help := global.BoolP("help", "h", false, "")
	if err := global.Parse(args); err != nil {
		fmt.Fprintf(stderr, "dmctl: %v; see dmctl --help\n", err)
		return exitUsage
	}
	rest := global.Args()
	if *help || len(rest) == 0 {
		mainUsage(stdout)
		if len(rest) == 0 && !*help {
			return exitUsage
		}
		return 0
	}
	c := find(rest[0])
	if c == nil {
		fmt.Fprintf(stderr, "dmctl: unknown command %q; see dmctl --help\n", rest[0])
		return exitUsage
	}
	fs := pflag.NewFlagSet("dmctl "+c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolP("help", "h", false, "show this help")
	fs.StringVar(&e.stateDir, "state-dir", e.stateDir, "leases, registry and sockets (`DIR`)")
	if c.flags != nil {
		c.flags(fs)
	}
	cmdArgs := rest[1:]
	if c.rawArgs {
		if len(cmdArgs) > 0 && (cmdArgs[0] == "--help" || cmdArgs[0] == "-h") {
			commandUsage(stdout, c, fs)
			return 0
		}
	} else {
		if err := fs.Parse(cmdArgs); err != nil {
			fmt.Fprintf(stderr, "dmctl %s: %v; see dmctl %s --help\n", c.name, err, c.name)
			return exitUsage
		}
		if h, _ := fs.GetBool("help"); h {
			commandUsage(stdout, c, fs)
			return 0
		}
		cmdArgs = fs.Args()
	}
	if e.stateDir == "" {
		dir, err := defaultStateDir()
		if err != nil && !slices.Contains(stateless, c.name) {
			fmt.Fprintf(stderr, "dmctl %s: %v\n", c.name, err)
			return exitUsage
		}
		e.stateDir = dir
	}
	err := c.run(e, fs, cmdArgs)
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "dmctl %s: %v; see dmctl %s --help\n", c.name, err, c.name)
		return exitUsage
	}
	var ec *exitCode
	if errors.As(err, &ec) {
		return ec.code
	}
	fmt.Fprintf(stderr, "dmctl %s: %v\n", c.name, err)
	return exitFailure
}

// exitCode ends a command with a status whose story was already told.
type exitCode struct{ code int }

func (e *exitCode) Error() string { return fmt.Sprintf("exit %d", e.code) }

func commandUsage(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: dmctl %s %s\n\n%s\n", c.name, c.args, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	if u := fs.FlagUsages(); u != "" && !c.rawArgs {
		fmt.Fprintf(w, "\nOptions:\n%s", u)
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", c.example)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return "devel-" + rev + dirty
		}
	}
	return "devel"
}

func init() {
	register(&command{
		name:    "version",
		args:    "",
		short:   "print dmctl's version",
		example: "  dmctl version",
		run: func(e *env, _ *pflag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usagef("takes no arguments")
			}
			fmt.Fprintf(e.stdout, "dmctl %s\n", buildVersion())
			return nil
		},
	})
}
