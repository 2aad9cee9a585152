package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/internal/qmp"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/internal/term"
	"github.com/go-delve/liner"
	"github.com/spf13/pflag"
)

// dmctl monitor's exit statuses, beyond 0 and 2 (usage): scripts tell a
// command QEMU refused from a QEMU they could not reach, and both from a
// command whose fate is unknown.
const (
	// exitMonitorCommandFailed: QEMU ran the command and reported an
	// error (an HMP error message, or a QMP error reply).
	exitMonitorCommandFailed = 1
	// exitMonitorNotSent: the command did not reach QEMU, so it did not
	// run: no launch or socket, connection refused, no greeting, QEMU
	// stopped in a debugger.
	exitMonitorNotSent = 3
	// exitMonitorNoReply: the command was sent but no complete reply came
	// (timeout, reply over the cap, connection closed): it may have run.
	exitMonitorNoReply = 4
)

func init() {
	register(&command{
		name:  "monitor",
		args:  "DOMID [-c COMMAND] [--qmp PATH] [--timeout DURATION] [--max-reply SIZE]",
		short: "a shell for QEMU's human monitor (HMP) of a domain",
		long: `Runs human monitor commands through QMP (human-monitor-command) on the socket
dmlaunch gave QEMU in the debug modes. Interactive use has line editing,
history kept in ~/.dmctl_history, and Tab completion of the commands QEMU's own
"help" lists; Ctrl-C clears the line, Ctrl-D leaves. "quit" is refused there:
it would end QEMU and the domain with it.

With -c, runs one command. With standard input not a terminal, runs one command
per line, for scripts; output goes to standard output, QEMU's error messages to
standard error.

It never hangs: connecting, QEMU's greeting and each command's reply must each
come within --timeout (default 10s), and one reply may not exceed --max-reply
(default 16M). A QEMU stopped in a debugger, or frozen waiting for one
(gdb-wait), cannot answer; dmctl says so.

Exit status: 0 every command succeeded; 1 QEMU reported an error for a
command (it ran and failed; the human monitor's "Error: ...", "unknown
command" and argument errors count); 2 usage error; 3 the command was not sent
(no such launch, no socket, refused, no QMP greeting, QEMU stopped): it did not
run; 4 the command was sent but no complete reply came (timeout, reply too
large, connection closed): it may have run.

A pass-through launch has no dmlaunch socket; libxl's own is
/var/run/xen/qmp-libxl-DOMID (--qmp PATH), which QEMU serves to one client at a
time, so libxl may be holding it.`,
		example: "  dmctl monitor 5\n  dmctl monitor 5 -c 'info status'\n  dmctl monitor 5 --timeout 2m -c 'savevm before-upgrade'\n  printf 'info status\\ninfo cpus\\n' | dmctl monitor 5",
		flags: func(fs *pflag.FlagSet) {
			fs.StringP("command", "c", "", "run one `COMMAND` and exit")
			fs.String("qmp", "", "QMP socket `PATH` to use instead of the launcher's")
			fs.String("history", "", "history `FILE` (default ~/.dmctl_history)")
			fs.Duration("timeout", qmp.DefaultTimeout, "limit for connecting, for QEMU's greeting and for each reply (`DURATION`: 500ms, 30s, 2m)")
			fs.String("max-reply", "16M", "largest reply accepted (`SIZE` in bytes, or with K, M or G)")
		},
		run: runMonitor,
	})
}

// monitorFailure ends dmctl monitor with a status from the table above,
// after saying why on standard error.
func monitorFailure(e *env, code int, format string, a ...any) error {
	fmt.Fprintf(e.stderr, "dmctl monitor: "+format+"\n", a...)
	return &exitCode{code}
}

// parseSize reads 1048576, 512K, 16M or 1G.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	if num != "" {
		switch num[len(num)-1] {
		case 'K':
			mult, num = 1<<10, num[:len(num)-1]
		case 'M':
			mult, num = 1<<20, num[:len(num)-1]
		case 'G':
			mult, num = 1<<30, num[:len(num)-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size: give bytes, or a number with K, M or G (16M)", s)
	}
	return n * mult, nil
}

func runMonitor(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	timeout, _ := fs.GetDuration("timeout")
	if timeout <= 0 {
		return usagef("--timeout must be more than 0 (500ms, 30s, 2m)")
	}
	sizeFlag, _ := fs.GetString("max-reply")
	maxReply, err := parseSize(sizeFlag)
	if err != nil {
		return usagef("--max-reply: %v", err)
	}
	path, _ := fs.GetString("qmp")
	qemuPID := 0
	if path == "" {
		rec, err := lookup(e, args[0])
		if err != nil {
			var ue *usageError
			if errors.As(err, &ue) {
				return err
			}
			return monitorFailure(e, exitMonitorNotSent, "%v", err)
		}
		if rec.QMP == "" {
			return monitorFailure(e, exitMonitorNotSent, "domain %d was launched in %s mode and has no dmlaunch QMP socket; libxl's is /var/run/xen/qmp-libxl-%d: dmctl monitor --qmp /var/run/xen/qmp-libxl-%d %d (one client at a time: libxl may hold it)",
				rec.Domid, shellquote.Visible(rec.Mode), rec.Domid, rec.Domid, rec.Domid)
		}
		path, qemuPID = rec.QMP, rec.QEMUPID
	}
	// A QEMU that cannot answer is said to be so at once, not after the
	// timeout: its socket would accept and then say nothing.
	if why := whyNotAnswering(qemuPID); why != "" {
		return monitorFailure(e, exitMonitorNotSent, "QMP socket %s: %s; nothing was sent", shellquote.Visible(path), why)
	}
	m, err := qmp.Dial(path, qmp.Options{Timeout: timeout, MaxReply: maxReply})
	if err != nil {
		return exchangeFailure(e, path, qemuPID, err)
	}
	defer m.Close()
	qemuPID = max(qemuPID, m.PeerPID())
	fail := func(err error) error { return exchangeFailure(e, path, qemuPID, err) }

	if c, _ := fs.GetString("command"); c != "" {
		if err := runHMP(e, m, c); err != nil {
			if code, ok := commandFailure(e, c, err); ok {
				return &exitCode{code}
			}
			return fail(err)
		}
		return nil
	}
	if e.stdin == nil || !term.IsTerminal(int(e.stdin.Fd())) {
		return monitorScript(e, m, fail)
	}
	hist, _ := fs.GetString("history")
	if hist == "" {
		home, _ := os.UserHomeDir()
		hist = filepath.Join(home, ".dmctl_history")
	}
	return monitorShell(e, m, hist, shellquote.Visible(args[0]), fail)
}

// exchangeFailure reports a session that broke: what broke, whether the
// command may have run, and why QEMU is not answering when that is known.
func exchangeFailure(e *env, path string, qemuPID int, err error) error {
	var xe *qmp.ExchangeError
	if !errors.As(err, &xe) {
		return monitorFailure(e, exitMonitorNoReply, "QMP socket %s: %v", shellquote.Visible(path), err)
	}
	if xe.PeerPID > 0 {
		qemuPID = xe.PeerPID
	}
	msg := fmt.Sprintf("QMP socket %s: %v", shellquote.Visible(path), err)
	if why := whyNotAnswering(qemuPID); why != "" {
		msg += "; " + why
	}
	var tooLarge *qmp.ReplyTooLargeError
	if errors.As(err, &tooLarge) {
		msg += " (--max-reply raises it)"
	} else if errors.Is(err, qmp.ErrTimeout) {
		msg += " (--timeout raises it)"
	}
	if xe.Sent() {
		return monitorFailure(e, exitMonitorNoReply, "%s; the command was sent and may have run", msg)
	}
	return monitorFailure(e, exitMonitorNotSent, "%s; nothing was sent", msg)
}

// commandFailure reports a command that QEMU ran and refused, with QEMU's
// own words; ok is false for any other error.
func commandFailure(e *env, line string, err error) (code int, ok bool) {
	var he *qmp.HMPError
	var qe *qmp.Error
	switch {
	case errors.As(err, &he):
		fmt.Fprintf(e.stderr, "dmctl monitor: %s: %s", shellquote.Visible(line), hmpText(he.Output))
		if !strings.HasSuffix(he.Output, "\n") {
			fmt.Fprintln(e.stderr)
		}
	case errors.As(err, &qe):
		fmt.Fprintf(e.stderr, "dmctl monitor: %s: %s\n", shellquote.Visible(line), shellquote.Visible(qe.Error()))
	default:
		return 0, false
	}
	return exitMonitorCommandFailed, true
}

// hmpText is QEMU's output as it goes to a terminal: Unix line ends, and
// control characters other than newline and tab escaped (output such as
// "info name" repeats what a guest's configuration said).
func hmpText(out string) string {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	for i, line := range lines {
		fields := strings.Split(line, "\t")
		for j, f := range fields {
			fields[j] = shellquote.Visible(f)
		}
		lines[i] = strings.Join(fields, "\t")
	}
	return strings.Join(lines, "\n")
}

func runHMP(e *env, m qmp.Monitor, line string) error {
	out, err := m.HumanMonitorCommand(line)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, hmpText(out))
	return nil
}

func monitorScript(e *env, m qmp.Monitor, fail func(error) error) error {
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
			if _, ok := commandFailure(e, line, err); ok {
				failed = true
				continue
			}
			// The session is broken or out of step: stop here.
			return fail(err)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if failed {
		return &exitCode{exitMonitorCommandFailed}
	}
	return nil
}

// hmpCommands learns command names from QEMU's own help, so completion
// matches the QEMU at hand. Only a broken session is an error.
func hmpCommands(m qmp.Monitor) (cmds, infos []string, err error) {
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
	var xe *qmp.ExchangeError
	h, err := m.HumanMonitorCommand("help")
	if errors.As(err, &xe) {
		return nil, nil, err
	}
	cmds = words(h, 0)
	h, err = m.HumanMonitorCommand("help info")
	if errors.As(err, &xe) {
		return nil, nil, err
	}
	infos = words(h, 1)
	return cmds, infos, nil
}

func monitorShell(e *env, m qmp.Monitor, histPath, domain string, fail func(error) error) error {
	cmds, infos, err := hmpCommands(m)
	if err != nil {
		return fail(err)
	}
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
			var he *qmp.HMPError
			var qe *qmp.Error
			switch {
			case errors.As(err, &he):
				fmt.Fprint(e.stdout, hmpText(he.Output))
			case errors.As(err, &qe):
				fmt.Fprintf(e.stdout, "error: %s\n", shellquote.Visible(qe.Error()))
			default:
				// Out of step with QEMU: a later reply could be
				// taken for the next command's.
				return fail(err)
			}
		}
	}
}
