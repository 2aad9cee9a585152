package registry

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary is also a daemonized QEMU's stand-in: started with
// REGISTRY_TEST_QEMU set, it runs until killed, with whatever argv it was
// given in /proc/PID/cmdline.
func TestMain(m *testing.M) {
	if os.Getenv("REGISTRY_TEST_QEMU") != "" {
		time.Sleep(10 * time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// running starts a program for the test, killed at its end.
func running(t *testing.T, env string, args ...string) proc.Identity {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if env != "" {
		cmd.Env = append(os.Environ(), env)
	}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := proc.Of(cmd.Process.Pid)
	require.NoError(t, err)
	return id
}

// standIn runs the test binary as a daemonized QEMU with this argv tail.
func standIn(t *testing.T, args ...string) proc.Identity {
	return running(t, "REGISTRY_TEST_QEMU=1", append([]string{os.Args[0]}, args...)...)
}

// gonePID is the pid of a process that has exited.
func gonePID(t *testing.T) int {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func writePIDFile(t *testing.T, text string) string {
	path := filepath.Join(t.TempDir(), "qemu.pid")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	good := writePIDFile(t, "4242\n")
	link := filepath.Join(dir, "link.pid")
	require.NoError(t, os.Symlink(good, link))
	fifo := filepath.Join(dir, "fifo.pid")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	for name, tt := range map[string]struct {
		path string
		pid  int
		err  string
	}{
		"as QEMU writes it": {path: good, pid: 4242},
		"no newline":        {path: writePIDFile(t, "17"), pid: 17},
		"empty":             {path: writePIDFile(t, ""), err: `holds "", not a pid`},
		"words":             {path: writePIDFile(t, "qemu\n"), err: `holds "qemu", not a pid`},
		"two pids":          {path: writePIDFile(t, "12 34\n"), err: "not a pid"},
		"two lines":         {path: writePIDFile(t, "12\n34\n"), err: "not a pid"},
		"negative":          {path: writePIDFile(t, "-5\n"), err: "not a pid"},
		"zero":              {path: writePIDFile(t, "0\n"), err: "not a pid"},
		"signed":            {path: writePIDFile(t, "+5\n"), err: "not a pid"},
		"leading zero":      {path: writePIDFile(t, "05\n"), err: "not a pid"},
		"oversized":         {path: writePIDFile(t, strings.Repeat("1", 40)), err: "is over 32 bytes"},
		"symbolic link":     {path: link, err: "is a symbolic link"},
		"fifo":              {path: fifo, err: "is not a regular file"},
		"directory":         {path: dir, err: "is not a regular file"},
	} {
		t.Run(name, func(t *testing.T) {
			pid, err := ReadPIDFile(tt.path)
			if tt.err != "" {
				var bad *PIDFileError
				require.ErrorAs(t, err, &bad)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.pid, pid)
		})
	}
	_, err := ReadPIDFile(filepath.Join(dir, "none.pid"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestFollow(t *testing.T) {
	self, err := proc.Self()
	require.NoError(t, err)
	// The record's launcher started before the daemon (notBefore is its
	// start time); the stand-in is dom0's QEMU daemonized.
	daemon := standIn(t, "-xen-domid", "0", "-xen-attach", "-name", "dom0", "-daemonize")
	otherDomain := standIn(t, "-xen-domid", "3", "-xen-attach", "-daemonize")
	other := running(t, "", "sleep", "600")
	recorded := []string{os.Args[0], "-xen-domid", "0", "-xen-attach", "-name", "dom0", "-daemonize", "-pidfile", "/run/qemu-dom0.pid"}
	before := proc.Identity{PID: gonePID(t), StartTime: daemon.StartTime}
	after := proc.Identity{PID: before.PID, StartTime: daemon.StartTime + 1}
	pidFileOf := func(id proc.Identity) string { return writePIDFile(t, strconv.Itoa(id.PID)+"\n") }
	link := filepath.Join(t.TempDir(), "link.pid")
	require.NoError(t, os.Symlink(pidFileOf(daemon), link))

	for name, tt := range map[string]struct {
		launcher proc.Identity
		mode     string
		pidFile  string
		argv     []string
		qemuPID  int
		state    State
		pid      int
	}{
		"launcher runs":                {launcher: self, mode: ModePassThrough, qemuPID: self.PID, state: Running},
		"supervised, QEMU not yet":     {launcher: self, mode: "gdb", state: Starting},
		"supervised launcher gone":     {launcher: before, mode: "gdb", qemuPID: 9, state: Stale},
		"pass-through QEMU exited":     {launcher: before, mode: ModePassThrough, qemuPID: before.PID, state: Ended},
		"daemonized QEMU runs":         {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(daemon), argv: recorded, state: Running, pid: daemon.PID},
		"recycled pid":                 {launcher: after, mode: ModePassThrough, pidFile: pidFileOf(daemon), argv: recorded, state: Ended},
		"pid of another program":       {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(other), argv: recorded, state: Ended},
		"QEMU of another domain":       {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(otherDomain), argv: recorded, state: Ended},
		"another QEMU binary":          {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(daemon), argv: append([]string{"/usr/bin/qemu"}, recorded[1:]...), state: Ended},
		"pidfile names a gone pid":     {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(proc.Identity{PID: gonePID(t)}), argv: recorded, state: Ended},
		"pidfile damaged":              {launcher: before, mode: ModePassThrough, pidFile: writePIDFile(t, "dom0\n"), argv: recorded, state: Ended},
		"pidfile is a symbolic link":   {launcher: before, mode: ModePassThrough, pidFile: link, argv: recorded, state: Ended},
		"pidfile missing":              {launcher: before, mode: ModePassThrough, pidFile: "/nonexistent/qemu.pid", argv: recorded, state: Ended},
		"supervised with a pidfile":    {launcher: before, mode: "gdb", pidFile: pidFileOf(daemon), argv: recorded, qemuPID: 9, state: Stale},
		"pidfile but no argv":          {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(daemon), state: Ended},
		"only QEMU and domid compared": {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(daemon), argv: recorded[:3], state: Running, pid: daemon.PID},
	} {
		t.Run(name, func(t *testing.T) {
			r := Record{Domid: 0, Kind: "qdisk", Mode: tt.mode, Launcher: tt.launcher, QEMUPID: tt.qemuPID, Argv: tt.argv, PIDFile: tt.pidFile}
			state, pid := r.Follow()
			assert.Equal(t, tt.state, state)
			assert.Equal(t, tt.pid, pid)

			// dmlaunch's own reader agrees, but cannot tell starting.
			s, err := ParseSummary(r.appendJSON(nil))
			require.NoError(t, err)
			if tt.state == Starting {
				tt.state = Running
			}
			state, pid = s.Follow()
			assert.Equal(t, tt.state, state, "Summary.Follow")
			assert.Equal(t, tt.pid, pid, "Summary.Follow")
		})
	}
}

func TestSweepEndedRemovesOnlyEndedRecords(t *testing.T) {
	dir := t.TempDir()
	self, err := proc.Self()
	require.NoError(t, err)
	gone := proc.Identity{PID: gonePID(t), StartTime: 1}
	daemon := standIn(t, "-xen-domid", "0", "-daemonize")
	pidFile := writePIDFile(t, strconv.Itoa(daemon.PID))
	write := func(r Record) string {
		path, err := Write(dir, r)
		require.NoError(t, err)
		return path
	}
	ended := write(Record{Domid: 1, Kind: "hvm", Mode: ModePassThrough, Launcher: gone})
	endedQdisk := write(Record{Domid: 2, Kind: "qdisk", Mode: ModePassThrough, Launcher: gone})
	live := write(Record{Domid: 3, Kind: "hvm", Mode: ModePassThrough, Launcher: self})
	stale := write(Record{Domid: 4, Kind: "hvm", Mode: "gdb", Launcher: gone})
	daemonized := write(Record{Domid: 0, Kind: "qdisk", Mode: ModePassThrough, Launcher: gone, PIDFile: pidFile,
		Argv: []string{os.Args[0], "-xen-domid", "0", "-daemonize", "-pidfile", pidFile}})
	own := write(Record{Domid: 5, Kind: "hvm", Mode: ModePassThrough, Launcher: gone})
	damaged := filepath.Join(dir, "6.json")
	require.NoError(t, os.WriteFile(damaged, []byte("{"), 0o600))
	other := filepath.Join(dir, "domids")
	require.NoError(t, os.WriteFile(other, []byte("not a record"), 0o600))

	assert.Equal(t, 2, SweepEnded(dir, FileName(5, "hvm")))
	for _, path := range []string{ended, endedQdisk} {
		assert.NoFileExists(t, path)
	}
	for path, why := range map[string]string{
		live: "a running launch", stale: "a stale record is damage, for dmctl doctor and prune", daemonized: "its daemon runs",
		own: "the caller replaces its own", damaged: "a record that cannot be read", other: "not a record",
	} {
		assert.FileExists(t, path, why)
	}
	assert.Equal(t, 0, SweepEnded(filepath.Join(dir, "none"), ""), "a missing directory has nothing to sweep")
}

func TestWriteKeepsTheOtherKindWhileItsDaemonRuns(t *testing.T) {
	dir := t.TempDir()
	gone := proc.Identity{PID: gonePID(t), StartTime: 1}
	daemon := standIn(t, "-xen-domid", "0", "-daemonize")
	pidFile := writePIDFile(t, strconv.Itoa(daemon.PID))
	backend, err := Write(dir, Record{Domid: 0, Kind: "qdisk", Mode: ModePassThrough, Launcher: gone, PIDFile: pidFile,
		Argv: []string{os.Args[0], "-xen-domid", "0", "-daemonize", "-pidfile", pidFile}})
	require.NoError(t, err)
	_, err = Write(dir, Record{Domid: 0, Kind: "pv", Mode: ModePassThrough, Launcher: gone})
	require.NoError(t, err)
	assert.FileExists(t, backend, "dom0's daemonized QEMU still runs")

	require.NoError(t, os.Remove(pidFile))
	_, err = Write(dir, Record{Domid: 0, Kind: "pv", Mode: ModePassThrough, Launcher: gone})
	require.NoError(t, err)
	assert.NoFileExists(t, backend, "once its daemon is gone, the other kind's launch removes it")
}

func TestDaemonPIDFile(t *testing.T) {
	for line, want := range map[string]string{
		"-daemonize -pidfile /run/qemu-dom0.pid":                     "/run/qemu-dom0.pid",
		"--daemonize --pidfile /run/a.pid":                           "/run/a.pid",
		"-pidfile /run/a.pid -daemonize -pidfile /run/b.pid":         "/run/b.pid",
		"-daemonize -pidfile qemu.pid":                               "qemu.pid",
		"-pidfile /run/a.pid":                                        "",
		"-daemonize":                                                 "",
		"-name -daemonize -pidfile /run/a.pid":                       "",
		"-run-with async-teardown=on -daemonize -pidfile /run/a.pid": "/run/a.pid",
	} {
		cl, err := argv.Parse(strings.Fields(line))
		require.NoError(t, err)
		assert.Equal(t, want, DaemonPIDFile(cl), line)
	}
}
