package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/qmp"
	"github.com/dmlaunch/dmlaunch/internal/term"
	"github.com/go-delve/liner"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "monitor",
		args:  "DOMID [-c COMMAND] [--qmp PATH]",
		short: "a shell for QEMU's human monitor (HMP) of a domain",
		long: `Runs human monitor commands through QMP (human-monitor-command) on the socket
dmlaunch gave QEMU in the debug modes. Interactive use has line editing,
history kept in ~/.dmctl_history, and Tab completion of the commands QEMU's own
"help" lists; Ctrl-C clears the line, Ctrl-D leaves. "quit" is refused there:
it would end QEMU and the domain with it.

With -c, runs one command. With standard input not a terminal, runs one command
per line, for scripts.

A pass-through launch has no dmlaunch socket; libxl's own is
/var/run/xen/qmp-libxl-DOMID (--qmp PATH), which QEMU serves to one client at a
time, so libxl may be holding it.`,
		example: "  dmctl monitor 5\n  dmctl monitor 5 -c 'info status'\n  printf 'info status\\ninfo cpus\\n' | dmctl monitor 5",
		flags: func(fs *pflag.FlagSet) {
			fs.StringP("command", "c", "", "run one `COMMAND` and exit")
			fs.String("qmp", "", "QMP socket `PATH` to use instead of the launcher's")
			fs.String("history", "", "history `FILE` (default ~/.dmctl_history)")
		},
		run: runMonitor,
	})
}

func runMonitor(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	path, _ := fs.GetString("qmp")
	if path == "" {
		rec, err := lookup(e, args[0])
		if err != nil {
			return err
		}
		if rec.QMP == "" {
			return fmt.Errorf("domain %d was launched in %s mode and has no dmlaunch QMP socket; libxl's is /var/run/xen/qmp-libxl-%d: dmctl monitor --qmp /var/run/xen/qmp-libxl-%d %d (one client at a time: libxl may hold it)",
				rec.Domid, rec.Mode, rec.Domid, rec.Domid, rec.Domid)
		}
		path = rec.QMP
	}
	m, err := qmp.Dial(path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("QMP socket %s: %w", path, err)
	}
	defer m.Close()

	if c, _ := fs.GetString("command"); c != "" {
		return runHMP(e, m, c)
	}
	if e.stdin == nil || !term.IsTerminal(int(e.stdin.Fd())) {
		return monitorScript(e, m)
	}
	hist, _ := fs.GetString("history")
	if hist == "" {
		home, _ := os.UserHomeDir()
		hist = filepath.Join(home, ".dmctl_history")
	}
	return monitorShell(e, m, hist, args[0])
}

func runHMP(e *env, m qmp.Monitor, line string) error {
	out, err := m.HumanMonitorCommand(line)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, strings.ReplaceAll(out, "\r\n", "\n"))
	return nil
}

func monitorScript(e *env, m qmp.Monitor) error {
	var in io.Reader = os.Stdin
	if e.stdin != nil {
		in = e.stdin
	}
	sc := bufio.NewScanner(in)
	failed := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := runHMP(e, m, line); err != nil {
			fmt.Fprintf(e.stderr, "dmctl monitor: %s: %v\n", line, err)
			failed = true
		}
	}
	if failed {
		return &exitCode{exitFailure}
	}
	return sc.Err()
}

// hmpCommands learns command names from QEMU's own help, so completion
// matches the QEMU at hand.
func hmpCommands(m qmp.Monitor) (cmds, infos []string) {
	words := func(text string, field int) []string {
		seen := map[string]bool{}
		var out []string
		for _, line := range strings.Split(text, "\n") {
			f := strings.Fields(line)
			if len(f) > field && !seen[f[field]] {
				w := strings.TrimRight(f[field], "|")
				for _, alt := range strings.Split(w, "|") {
					if alt != "" && !seen[alt] {
						seen[alt] = true
						out = append(out, alt)
					}
				}
			}
		}
		sort.Strings(out)
		return out
	}
	if h, err := m.HumanMonitorCommand("help"); err == nil {
		cmds = words(h, 0)
	}
	if h, err := m.HumanMonitorCommand("help info"); err == nil {
		infos = words(h, 1)
	}
	return cmds, infos
}

func monitorShell(e *env, m qmp.Monitor, histPath, domain string) error {
	cmds, infos := hmpCommands(m)
	l := liner.NewLiner()
	defer l.Close()
	l.SetCtrlCAborts(true)
	l.SetTabCompletionStyle(liner.TabPrints)
	l.SetCompleter(func(line string) []string {
		var out []string
		if rest, ok := strings.CutPrefix(line, "info "); ok {
			for _, c := range infos {
				if strings.HasPrefix(c, rest) {
					out = append(out, "info "+c)
				}
			}
			return out
		}
		if strings.Contains(line, " ") {
			return nil
		}
		for _, c := range cmds {
			if strings.HasPrefix(c, line) {
				out = append(out, c)
			}
		}
		return out
	})
	if f, err := os.Open(histPath); err == nil {
		_, _ = l.ReadHistory(f)
		f.Close()
	}
	saveHistory := func() {
		if f, err := os.OpenFile(histPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
			_, _ = l.WriteHistory(f)
			f.Close()
		}
	}
	defer saveHistory()
	fmt.Fprintf(e.stdout, "QEMU monitor of domain %s. Tab completes, Ctrl-C clears the line, Ctrl-D leaves.\n", domain)
	for {
		line, err := l.Prompt("(qemu) ")
		switch {
		case errors.Is(err, liner.ErrPromptAborted):
			continue
		case errors.Is(err, io.EOF):
			fmt.Fprintln(e.stdout)
			return nil
		case err != nil:
			return err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		l.AppendHistory(line)
		switch strings.Fields(line)[0] {
		case "exit":
			return nil
		case "quit", "q":
			fmt.Fprintln(e.stdout, "'quit' would end QEMU and the domain with it; use system_powerdown, or dmctl monitor DOMID -c quit if you mean it")
			continue
		}
		if err := runHMP(e, m, line); err != nil {
			fmt.Fprintf(e.stdout, "error: %v\n", err)
		}
	}
}
