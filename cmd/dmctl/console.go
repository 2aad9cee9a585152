package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/dmlaunch/dmlaunch/internal/term"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// escapeByte is Ctrl-], telnet's and virsh console's escape.
const escapeByte = 0x1d

func init() {
	register(&command{
		name:  "console",
		args:  "DOMID [--history BYTES]",
		short: "attach the terminal to a domain's serial console",
		long: `Shows the end of the console log, then connects the terminal, in raw mode, to
the pty dmlaunch publishes for the guest's first serial port. Ctrl-] detaches.
The terminal is restored however the session ends: Ctrl-], SIGTERM, SIGHUP,
or the domain going away.

Any terminal program can open the same pty (dmctl list shows it):
screen /dev/pts/N, minicom -D /dev/pts/N.`,
		example: "  dmctl console 5",
		flags: func(fs *pflag.FlagSet) {
			fs.Int("history", 2048, "show the last `BYTES` of the console log first (0: none)")
		},
		run: runConsole,
	})
}

func runConsole(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	rec, err := lookup(e, args[0])
	if err != nil {
		return err
	}
	if rec.ConsolePTY == "" {
		return fmt.Errorf("domain %d runs in %s mode and has no console pty; launch it with DMLAUNCH_DEBUG=console (or gdb)", rec.Domid, rec.Mode)
	}
	ptyFile, err := os.OpenFile(rec.ConsolePTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open the console pty: %w", err)
	}
	defer ptyFile.Close()
	// What piled up while nobody was attached is in the log; show that
	// instead of a stale, truncated copy.
	_ = term.FlushInput(int(ptyFile.Fd()))

	if n, _ := fs.GetInt("history"); n > 0 && rec.ConsoleLog != "" {
		if tail := logTail(rec.ConsoleLog, int64(n)); len(tail) > 0 {
			fmt.Fprintf(e.stdout, "--- last %d bytes of %s ---\r\n", len(tail), rec.ConsoleLog)
			_, _ = e.stdout.Write(bytes.ReplaceAll(bytes.ReplaceAll(tail, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")))
			fmt.Fprint(e.stdout, "\r\n--- live ---\r\n")
		}
	}

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
	fmt.Fprintf(e.stdout, "Connected to domain %d (%s), %s. Escape character is ^].\r\n", rec.Domid, rec.Name, rec.ConsolePTY)

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

func logTail(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	_, _ = f.ReadAt(b, off)
	return b
}
