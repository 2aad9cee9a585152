package coredump

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/shellquote"
)

// Bounds on the backtrace the launcher adds to the toolstack's log: it
// runs while the toolstack waits for the launcher to exit, and a log is
// read by people.
const (
	BacktraceTimeout  = 30 * time.Second
	BacktraceMaxLines = 400
	FramesPerThread   = 64
	backtraceMaxBytes = 256 << 10
)

// Trace is a bounded backtrace of every thread of a core.
type Trace struct {
	Lines []string
	// Cut is how many lines were left out to keep within the bounds.
	Cut int
	// CoreCutShort is set when gdb said the core is truncated.
	CoreCutShort bool
}

// BacktraceArgs is gdb's command line for every thread's backtrace of a
// core, loaded with the binary that dumped it. No init files, no
// debuginfod: this runs unattended, and must not reach the network.
func BacktraceArgs(gdb, binary, core string) []string {
	return []string{gdb, "-nx", "-batch",
		"-iex", "set debuginfod enabled off",
		"-ex", "set pagination off", "-ex", "set width 0",
		"-ex", "set print frame-arguments scalars",
		"-ex", fmt.Sprintf("thread apply all bt %d", FramesPerThread),
		binary, core}
}

// Backtrace runs gdb in batch mode on the core and returns what it
// printed, bounded in time, lines and bytes. Bytes that are not printable
// (a guest can put anything in QEMU's memory) are shown as \xNN.
func Backtrace(ctx context.Context, gdb, binary, core string) (Trace, error) {
	ctx, cancel := context.WithTimeout(ctx, BacktraceTimeout)
	defer cancel()
	args := BacktraceArgs(gdb, binary, core)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(withoutEnv(os.Environ(), "DEBUGINFOD_URLS"), "DEBUGINFOD_URLS=")
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The time limit ends gdb and anything it started.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Trace{}, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return Trace{}, err
	}
	tr := readTrace(io.LimitReader(out, backtraceMaxBytes))
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return tr, fmt.Errorf("gdb did not finish within %v", BacktraceTimeout)
	}
	if len(tr.Lines) == 0 && werr != nil {
		return tr, fmt.Errorf("gdb: %w", werr)
	}
	return tr, nil
}

func readTrace(r io.Reader) Trace {
	var tr Trace
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "segment extending past end of file") || strings.Contains(line, "is truncated: expected core file size") {
			tr.CoreCutShort = true
		}
		// One per thread, and said again in each thread's heading.
		if strings.HasPrefix(line, "[New LWP ") || strings.TrimSpace(line) == "" {
			continue
		}
		if len(tr.Lines) >= BacktraceMaxLines {
			tr.Cut++
			continue
		}
		tr.Lines = append(tr.Lines, shellquote.Visible(line))
	}
	return tr
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
