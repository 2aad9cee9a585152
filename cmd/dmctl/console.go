package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/internal/term"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// escapeByte is Ctrl-], telnet's and virsh console's escape.
const escapeByte = 0x1d

// followPoll is how often --read-only looks for new bytes in the log.
const followPoll = 100 * time.Millisecond

func init() {
	register(&command{
		name:  "console",
		args:  "DOMID [--history BYTES] [--read-only]",
		short: "attach the terminal to a domain's serial console",
		long: `Shows the end of this launch's part of the console log (earlier launches of the
same domid are left out), then connects the terminal, in raw mode, to the pty
dmlaunch publishes for the guest's first serial port. Ctrl-] detaches. The
terminal is restored however the session ends: Ctrl-], SIGTERM, SIGHUP, or the
domain going away.

One session at a time: a pty has one reader, and two would split the guest's
output between them. While another program holds the console pty (another
dmctl console, screen, minicom, xl console), dmctl console is refused and says
who holds it. --read-only follows the console log instead, without touching
the pty, as many times over as you like; Ctrl-C leaves.

Any terminal program can open the pty (dmctl list shows it):
screen /dev/pts/N, minicom -D /dev/pts/N.`,
		example: "  dmctl console 5\n  dmctl console 5 --read-only",
		flags: func(fs *pflag.FlagSet) {
			fs.Int("history", 2048, "show the last `BYTES` of this launch's console log first (0: none)")
			fs.BoolP("read-only", "r", false, "follow the console log; never take the console")
		},
		run: runConsole,
	})
}

func runConsole(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	history, _ := fs.GetInt("history")
	if history < 0 {
		return usagef("--history must be 0 or more")
	}
	readOnly, _ := fs.GetBool("read-only")
	rec, err := lookup(e, args[0])
	if err != nil {
		return err
	}
	if rec.ConsolePTY == "" {
		return fmt.Errorf("domain %d runs in %s mode and has no console pty; launch it with DMLAUNCH_DEBUG=console (or gdb)", rec.Domid, shellquote.Visible(rec.Mode))
	}
	if readOnly {
		return followConsole(e, rec, int64(history))
	}
	ptyFile, err := os.OpenFile(rec.ConsolePTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open the console pty: %w", err)
	}
	defer ptyFile.Close()
	// One session at a time. The lock settles two dmctl sessions that
	// start together; the scan finds programs that take no lock (screen,
	// minicom, xl console). Both come before anything is read or
	// flushed: the pty's bytes belong to whoever holds it.
	if err := unix.Flock(int(ptyFile.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return consoleBusy(e, rec, err)
	}
	if holders := ptyHolders(rec.ConsolePTY, rec.Launcher.PID, os.Getpid()); len(holders) > 0 {
		return consoleBusy(e, rec, nil)
	}
	// What piled up while nobody was attached is in the log; show that
	// instead of a stale, truncated copy.
	_ = term.FlushInput(int(ptyFile.Fd()))

	in := os.Stdin
	if e.stdin != nil {
		in = e.stdin
	}
	fd := int(in.Fd())
	if term.IsTerminal(fd) {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		// Restored on every way out, including signals.
		restore := func() { _ = term.Restore(fd, old) }
		defer restore()
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
		defer signal.Stop(sigs)
		go func() {
			if s, ok := <-sigs; ok {
				restore()
				fmt.Fprintf(e.stderr, "\r\ndmctl console: %v: detached\n", s)
				os.Exit(128 + int(s.(syscall.Signal)))
			}
		}()
	}
	// After raw mode: the history's line ends are the console's own.
	showHistory(e, rec, int64(history), term.IsTerminal(fd))
	fmt.Fprintf(e.stdout, "Connected to domain %d (%s), %s. Escape character is ^].\r\n", rec.Domid, shellquote.Visible(rec.Name), shellquote.Visible(rec.ConsolePTY))

	lost := make(chan error, 1)
	go func() {
		_, err := io.Copy(e.stdout, ptyFile)
		lost <- err
	}()
	detached := make(chan struct{})
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], escapeByte); i >= 0 {
				_, _ = ptyFile.Write(buf[:i])
				close(detached)
				return
			}
			if n > 0 {
				if _, werr := ptyFile.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				close(detached)
				return
			}
		}
	}()
	select {
	case <-detached:
		fmt.Fprintf(e.stdout, "\r\nDetached from domain %d's console.\r\n", rec.Domid)
		return nil
	case err := <-lost:
		fmt.Fprintf(e.stdout, "\r\nThe console pty closed (%v): the domain's device model is gone.\r\n", err)
		return &exitCode{exitFailure}
	}
}

// consoleBusy refuses a second session, naming who has the console.
func consoleBusy(e *env, rec inventory.Entry, lockErr error) error {
	holders := ptyHolders(rec.ConsolePTY, rec.Launcher.PID, os.Getpid())
	who := "another session"
	if len(holders) > 0 {
		var names []string
		for _, h := range holders {
			names = append(names, h.String())
		}
		who = strings.Join(names, ", ")
	} else if lockErr != nil && !errors.Is(lockErr, unix.EWOULDBLOCK) {
		return fmt.Errorf("lock the console pty %s: %w", shellquote.Visible(rec.ConsolePTY), lockErr)
	}
	return fmt.Errorf("domain %d's console is in use by %s: one session at a time, or the guest's output would be split between them; "+
		"dmctl console %d --read-only follows it without taking it, or end that session first",
		rec.Domid, who, rec.Domid)
}

// holder is a process that has a pty open.
type holder struct {
	pid     int
	command string
	user    string
	since   time.Time
}

func (h holder) String() string {
	s := fmt.Sprintf("%s (pid %d, user %s", shellquote.Visible(h.command), h.pid, shellquote.Visible(h.user))
	if !h.since.IsZero() {
		s += ", since " + h.since.Format("15:04:05")
	}
	return s + ")"
}

// ptyHolders lists the processes, other than the ones named, with path
// open: what /proc/*/fd says, for the processes this user may look at
// (root sees all).
func ptyHolders(path string, except ...int) []holder {
	target, err := os.Stat(path)
	if err != nil {
		return nil
	}
	skip := map[int]bool{}
	for _, pid := range except {
		skip[pid] = true
	}
	procs, _ := os.ReadDir("/proc")
	var out []holder
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || skip[pid] {
			continue
		}
		dir := filepath.Join("/proc", p.Name(), "fd")
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			// Stat, not Readlink: the same device under any name.
			fi, err := os.Stat(filepath.Join(dir, fd.Name()))
			if err != nil || !os.SameFile(fi, target) {
				continue
			}
			h := holder{pid: pid, command: "pid " + p.Name(), user: "?"}
			if b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm")); err == nil {
				h.command = strings.TrimSpace(string(b))
			}
			if pi, err := os.Stat(filepath.Join("/proc", p.Name())); err == nil {
				if st, ok := pi.Sys().(*syscall.Stat_t); ok {
					h.user = strconv.Itoa(int(st.Uid))
					if u, err := user.LookupId(h.user); err == nil {
						h.user = u.Username
					}
				}
			}
			h.since = startedAt(pid)
			out = append(out, h)
			break
		}
	}
	return out
}

// startedAt is when a process started, from its start time in clock ticks
// after boot (USER_HZ is 100 on Linux) and the boot time in /proc/stat.
func startedAt(pid int) time.Time {
	ticks, err := proc.StartTime(pid)
	if err != nil {
		return time.Time{}
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				break
			}
			return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / 100)
		}
	}
	return time.Time{}
}

// showHistory prints the end of this launch's part of the console log.
func showHistory(e *env, rec inventory.Entry, n int64, raw bool) {
	if n <= 0 || rec.ConsoleLog == "" {
		return
	}
	if tail, err := console.LaunchTail(rec.ConsoleLog, rec.Launcher.PID, n); err == nil {
		printHistory(e, rec, tail, raw)
	}
}

// printHistory shows the bytes of this launch's log before the live ones.
// raw: the terminal is in raw mode, so line ends become CR LF.
func printHistory(e *env, rec inventory.Entry, tail []byte, raw bool) {
	if len(tail) == 0 {
		return
	}
	nl := "\n"
	if raw {
		nl = "\r\n"
		tail = bytes.ReplaceAll(bytes.ReplaceAll(tail, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	}
	fmt.Fprintf(e.stdout, "--- the last %d bytes of this launch's console log, %s ---%s", len(tail), shellquote.Visible(rec.ConsoleLog), nl)
	_, _ = e.stdout.Write(tail)
	fmt.Fprintf(e.stdout, "%s--- live ---%s", nl, nl)
}

// followConsole is --read-only: the log's new bytes as they come, through
// rotations, until the launch ends or the user leaves (Ctrl-C). It never
// opens the pty, so it cannot take a byte from anyone.
func followConsole(e *env, rec inventory.Entry, history int64) error {
	if rec.ConsoleLog == "" {
		return fmt.Errorf("domain %d has no console log in its record", rec.Domid)
	}
	f, err := os.Open(rec.ConsoleLog)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("console log: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var off int64
	if f != nil {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("console log: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("console log %s is not a regular file", shellquote.Visible(rec.ConsoleLog))
		}
		off = fi.Size()
		if tail, err := console.LaunchTailOf(f, off, rec.Launcher.PID, history); err == nil {
			printHistory(e, rec, tail, false)
		}
	}
	fmt.Fprintf(e.stdout, "Following domain %d (%s)'s console log, read-only. Ctrl-C leaves.\n", rec.Domid, shellquote.Visible(rec.Name))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	buf := make([]byte, 64<<10)
	// drain copies what the file holds past off.
	drain := func() {
		for f != nil {
			n, err := f.ReadAt(buf, off)
			if n > 0 {
				_, _ = e.stdout.Write(buf[:n])
				off += int64(n)
			}
			if err != nil || n == 0 {
				return
			}
		}
	}
	lastCheck := time.Now()
	for {
		select {
		case <-sigs:
			fmt.Fprintln(e.stdout)
			return nil
		case <-tick.C:
		}
		drain()
		if time.Since(lastCheck) < time.Second {
			continue
		}
		lastCheck = time.Now()
		// Rotated: finish the old file, then go on with the new one
		// from its start.
		if rotated(f, rec.ConsoleLog) {
			if nf, err := os.Open(rec.ConsoleLog); err == nil {
				drain()
				if f != nil {
					f.Close()
				}
				f, off = nf, 0
				drain()
			}
		}
		if !rec.Launcher.Alive() {
			drain()
			fmt.Fprintf(e.stdout, "\nDomain %d's launch ended.\n", rec.Domid)
			return &exitCode{exitFailure}
		}
	}
}

// rotated tells whether path now names another file than f (or a file at
// all, when f is nil).
func rotated(f *os.File, path string) bool {
	now, err := os.Stat(path)
	if err != nil {
		return false
	}
	if f == nil {
		return true
	}
	held, err := f.Stat()
	return err == nil && !os.SameFile(held, now)
}
