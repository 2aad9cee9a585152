package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Two launches of one domid share a log: dmctl console shows only the
// running one's part, holds the console alone, names whoever holds it when
// it cannot, and --read-only follows the log (through a rotation) without
// touching the pty. A name with an escape sequence is shown escaped.
func TestConsoleIsExclusiveAndShowsOnlyThisLaunch(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	logDir := filepath.Join(t.TempDir(), "log")
	old := startDomainLogging(t, state, logDir, 12, "console", "old guest", "from the old launch")
	require.NoError(t, old.cmd.Process.Signal(syscall.SIGHUP))
	<-old.done
	const name = "new\x1b[31mguest"
	d := startDomainLogging(t, state, logDir, 12, "console", name, "from the new launch")
	rec := d.record(t)
	b, err := os.ReadFile(rec.ConsoleLog)
	require.NoError(t, err)
	require.Contains(t, string(b), "from the old launch", "one log for both launches")
	assert.Contains(t, string(b), `: domain 12 (new\x1b[31mguest), launcher pid `, "the header escapes the name")

	tm := startTerminal(t, []string{"DMLAUNCH_STATE_DIR=" + state}, "console", "12")
	pos := tm.expect(t, 0, "--- the last ")
	pos = tm.expect(t, pos, "from the new launch")
	pos = tm.expect(t, pos, `Connected to domain 12 (new\x1b[31mguest)`)
	pos = tm.expect(t, pos, "Escape character is ^].")
	assert.NotContains(t, tm.out.String(), "from the old launch", "history is this launch's only")
	assert.NotContains(t, tm.out.String(), "\x1b[31m", "no raw escape sequence from the name")

	// A second session is refused, with who holds the console.
	out, status := runDmctl(t, "--state-dir", state, "console", "12")
	assert.Equal(t, exitFailure, status)
	assert.Regexp(t, fmt.Sprintf(`domain 12's console is in use by dmctl \(pid %d, user root, since \d\d:\d\d:\d\d\): one session at a time`, tm.cmd.Process.Pid), out)
	assert.Contains(t, out, "dmctl console 12 --read-only follows it without taking it")

	// Read-only, alongside: this launch's history, then what the log gets,
	// across a rename.
	follow := exec.Command(dmctlBin, "--state-dir", state, "console", "12", "--read-only")
	follow.Env = []string{"DMLAUNCH_CONFIG="}
	fout := &realtest.SyncBuffer{}
	follow.Stdout, follow.Stderr = fout, fout
	require.NoError(t, follow.Start())
	waitFor := func(s string) {
		require.Eventually(t, func() bool { return strings.Contains(fout.String(), s) }, 20*time.Second, 10*time.Millisecond, "waiting for %q in %q", s, fout.String())
	}
	waitFor("from the new launch")
	waitFor("Following domain 12 (new\\x1b[31mguest)'s console log, read-only. Ctrl-C leaves.\n")
	appendTo := func(path, s string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		require.NoError(t, err)
		_, err = f.WriteString(s)
		require.NoError(t, err)
		f.Close()
	}
	appendTo(rec.ConsoleLog, "appended line\n")
	waitFor("appended line\n")
	require.NoError(t, os.Rename(rec.ConsoleLog, rec.ConsoleLog+".1"))
	appendTo(rec.ConsoleLog+".1", "late in the rotated file\n")
	appendTo(rec.ConsoleLog, "in the new file\n")
	waitFor("in the new file\n")
	require.NoError(t, follow.Process.Signal(syscall.SIGINT))
	require.NoError(t, follow.Wait(), "Ctrl-C leaves with status 0")
	got := fout.String()
	assert.NotContains(t, got, "from the old launch")
	assert.Less(t, strings.Index(got, "late in the rotated file"), strings.Index(got, "in the new file"), "the rotated file is finished first:\n%s", got)
	assert.Equal(t, 1, strings.Count(got, "from the new launch"), "no byte twice")

	// The first session still has the console, and leaves it.
	tm.typeText(t, "\x1d")
	tm.expect(t, pos, "Detached from domain 12's console.")
	assert.Equal(t, 0, tm.exitStatus(t))

	// A program that takes no lock (screen, minicom) is found too.
	holder, err := os.OpenFile(rec.ConsolePTY, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	out, status = runDmctl(t, "--state-dir", state, "console", "12")
	holder.Close()
	assert.Equal(t, exitFailure, status)
	comm, _ := os.ReadFile("/proc/self/comm")
	assert.Contains(t, out, fmt.Sprintf("in use by %s (pid %d, user root", strings.TrimSpace(string(comm)), os.Getpid()))
}
