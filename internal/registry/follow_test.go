package registry

import (
	"errors"
	"io"
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
	"golang.org/x/sys/unix"
)

// The test binary is also a daemonized QEMU's stand-in: started with
// REGISTRY_TEST_QEMU set, it runs until killed, with whatever argv it was
// given in /proc/PID/cmdline; with REGISTRY_TEST_PIDFILE it first writes
// its pid there and holds a write lock on it, as QEMU's -pidfile does.
func TestMain(m *testing.M) {
	if os.Getenv("REGISTRY_TEST_QEMU") != "" {
		if path := os.Getenv("REGISTRY_TEST_PIDFILE"); path != "" {
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
			if err != nil {
				os.Exit(3)
			}
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
			if unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk) != nil || unix.Ftruncate(fd, 0) != nil {
				os.Exit(4)
			}
			if _, err := unix.Write(fd, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
				os.Exit(5)
			}
		}
		time.Sleep(10 * time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// running starts a program for the test, killed at its end.
func running(t *testing.T, env []string, args ...string) proc.Identity {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := proc.Of(cmd.Process.Pid)
	require.NoError(t, err)
	return id
}

// standIn runs the test binary as a daemonized QEMU with this argv tail,
// holding pidFile as QEMU does once it has written it ("" for none).
func standIn(t *testing.T, pidFile string, args ...string) proc.Identity {
	t.Helper()
	id := running(t, []string{"REGISTRY_TEST_QEMU=1", "REGISTRY_TEST_PIDFILE=" + pidFile}, append([]string{os.Args[0]}, args...)...)
	if pidFile != "" {
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(pidFile)
			return string(b) == strconv.Itoa(id.PID)+"\n"
		}, 10*time.Second, time.Millisecond, "the stand-in wrote its pidfile")
	}
	return id
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

func pidFilePath(t *testing.T) string { return filepath.Join(t.TempDir(), "qemu.pid") }

func TestReadLockedPIDFile(t *testing.T) {
	dir := t.TempDir()
	good := writePIDFile(t, "4242\n")
	link := filepath.Join(dir, "link.pid")
	require.NoError(t, os.Symlink(good, link))
	fifo := filepath.Join(dir, "fifo.pid")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	writable := writePIDFile(t, "17\n")
	require.NoError(t, os.Chmod(writable, 0o620))
	me := os.Geteuid()
	locked := pidFilePath(t)
	holder := standIn(t, locked)

	for name, tt := range map[string]struct {
		path   string
		pid    int
		holder int
		err    string
	}{
		"as QEMU writes it":      {path: good, pid: 4242},
		"locked by its daemon":   {path: locked, pid: holder.PID, holder: holder.PID},
		"no newline":             {path: writePIDFile(t, "17"), pid: 17},
		"empty, nobody holds it": {path: writePIDFile(t, "")},
		"words, nobody holds it": {path: writePIDFile(t, "qemu\n")},
		"oversized":              {path: writePIDFile(t, strings.Repeat("1", 40)), err: "is over 32 bytes"},
		"symbolic link":          {path: link, err: "is a symbolic link; not followed"},
		"fifo":                   {path: fifo, err: "is not a regular file"},
		"directory":              {path: dir, err: "is not a regular file"},
		"a tty":                  {path: "/dev/tty", err: "is not a regular file"},
		"a character device":     {path: "/dev/null", err: "is not a regular file"},
		"group-writable":         {path: writable, err: "has mode 0620, writable by others"},
	} {
		t.Run(name, func(t *testing.T) {
			pid, h, err := readLockedPIDFile(tt.path, me)
			if tt.err != "" {
				var bad *PIDFileError
				require.ErrorAs(t, err, &bad)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.pid, pid)
			assert.Equal(t, tt.holder, h)
		})
	}
	t.Run("whose owner", func(t *testing.T) {
		if me != 0 {
			t.Skip("needs root to give a file away")
		}
		others := writePIDFile(t, "17\n")
		require.NoError(t, os.Chown(others, 4321, 4321))
		_, _, err := readLockedPIDFile(others, 0)
		var bad *PIDFileError
		require.ErrorAs(t, err, &bad, "another user's pidfile")
		assert.Contains(t, err.Error(), "is owned by uid 4321, neither root nor the state directory's owner")
		pid, _, err := readLockedPIDFile(others, 4321)
		require.NoError(t, err, "the state directory owner's")
		assert.Equal(t, 17, pid)
		pid, _, err = readLockedPIDFile(good, 4321)
		require.NoError(t, err, "root's, whoever owns the state directory")
		assert.Equal(t, 4242, pid)
	})
	_, _, err := readLockedPIDFile(filepath.Join(dir, "none.pid"), me)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// A pidfile that names a tty is never opened: opened without O_NOCTTY by
// a session leader without a terminal (a launch libxl made, after its
// setsid), it would become that process's controlling terminal.
func TestPIDFileNamingATtyIsNotOpened(t *testing.T) {
	if os.Getenv("REGISTRY_TEST_CTTY") != "" {
		_, err := unix.Setsid()
		if err != nil {
			os.Exit(6)
		}
		_, _, err = readLockedPIDFile(os.Getenv("REGISTRY_TEST_CTTY"), 0)
		var bad *PIDFileError
		if !errors.As(err, &bad) {
			os.Exit(7)
		}
		// TIOCGSID on /dev/tty: ENXIO when there is no controlling tty.
		if fd, err := unix.Open("/dev/tty", unix.O_RDONLY|unix.O_NOCTTY, 0); err == nil {
			unix.Close(fd)
			os.Exit(8)
		}
		os.Exit(0)
	}
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(master)
	require.NoError(t, unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPIDFileNamingATtyIsNotOpened$")
	cmd.Env = append(os.Environ(), "REGISTRY_TEST_CTTY=/dev/pts/"+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "a session leader that followed a pidfile naming a tty has it as controlling terminal: %s", out)
}

func TestFollow(t *testing.T) {
	self, err := proc.Self()
	require.NoError(t, err)
	// The record's launcher started before the daemon (notBefore is its
	// start time); the stand-in is dom0's QEMU daemonized, holding its
	// pidfile.
	dom0PIDFile := pidFilePath(t)
	daemon := standIn(t, dom0PIDFile, "-xen-domid", "0", "-xen-attach", "-name", "dom0", "-daemonize")
	otherPIDFile := pidFilePath(t)
	standIn(t, otherPIDFile, "-xen-domid", "3", "-xen-attach", "-daemonize")
	other := running(t, nil, "sleep", "600")
	recorded := []string{os.Args[0], "-xen-domid", "0", "-xen-attach", "-name", "dom0", "-daemonize", "-pidfile", dom0PIDFile}
	before := proc.Identity{PID: gonePID(t), StartTime: daemon.StartTime}
	after := proc.Identity{PID: before.PID, StartTime: daemon.StartTime + 1}
	goneDaemon := gonePID(t)
	pidFileOf := func(id proc.Identity) string { return writePIDFile(t, strconv.Itoa(id.PID)+"\n") }
	link := filepath.Join(t.TempDir(), "link.pid")
	require.NoError(t, os.Symlink(dom0PIDFile, link))
	writable := pidFilePath(t)
	standIn(t, writable, "-xen-domid", "0", "-daemonize")
	require.NoError(t, os.Chmod(writable, 0o666))
	relative := append(recorded[:len(recorded)-1:len(recorded)-1], "qemu-dom0.pid")

	for name, tt := range map[string]struct {
		launcher proc.Identity
		mode     string
		pidFile  string
		argv     []string
		qemuPID  int
		state    State
		pid      int
		why      string
	}{
		"launcher runs":            {launcher: self, mode: ModePassThrough, qemuPID: self.PID, state: Running},
		"supervised, QEMU not yet": {launcher: self, mode: "gdb", state: Starting},
		"supervised launcher gone": {launcher: before, mode: "gdb", qemuPID: 9, state: Stale},
		"pass-through QEMU exited": {launcher: before, mode: ModePassThrough, qemuPID: before.PID, state: Ended},
		"daemonized QEMU runs":     {launcher: before, mode: ModePassThrough, pidFile: dom0PIDFile, argv: recorded, state: Running, pid: daemon.PID},
		"QEMU run through a wrapper script": {launcher: before, mode: ModePassThrough, pidFile: dom0PIDFile,
			argv: append([]string{"/usr/bin/qemu-system-i386"}, recorded[1:]...), state: Running, pid: daemon.PID},
		"record of an earlier version, pidfile in its argv": {launcher: before, mode: ModePassThrough, argv: recorded, state: Running, pid: daemon.PID},
		"record of an earlier version, relative pidfile":    {launcher: before, mode: ModePassThrough, argv: relative, state: Unknown, why: "qemu-dom0.pid is relative"},
		"record of an earlier version, not daemonized":      {launcher: before, mode: ModePassThrough, argv: recorded[:6], state: Ended},
		"holder started before the launch":                  {launcher: after, mode: ModePassThrough, pidFile: dom0PIDFile, argv: recorded, state: Unknown, why: "started before the launch"},
		"pid of another program, nobody holds the file":     {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(other), argv: recorded, state: Ended, pid: other.PID},
		"QEMU of another domain holds it":                   {launcher: before, mode: ModePassThrough, pidFile: otherPIDFile, argv: recorded, state: Unknown, why: `whose -xen-domid is "3", not the launch's "0"`},
		"pidfile names a gone pid":                          {launcher: before, mode: ModePassThrough, pidFile: pidFileOf(proc.Identity{PID: goneDaemon}), argv: recorded, state: Ended, pid: goneDaemon},
		"pidfile damaged, nobody holds it":                  {launcher: before, mode: ModePassThrough, pidFile: writePIDFile(t, "dom0\n"), argv: recorded, state: Ended},
		"pidfile is a symbolic link":                        {launcher: before, mode: ModePassThrough, pidFile: link, argv: recorded, state: Unknown, why: "is a symbolic link"},
		"pidfile is a tty":                                  {launcher: before, mode: ModePassThrough, pidFile: "/dev/tty", argv: recorded, state: Unknown, why: "not a regular file"},
		"pidfile writable by others":                        {launcher: before, mode: ModePassThrough, pidFile: writable, argv: recorded, state: Unknown, why: "writable by others"},
		"pidfile missing":                                   {launcher: before, mode: ModePassThrough, pidFile: "/nonexistent/qemu.pid", argv: recorded, state: Ended},
		"supervised with a pidfile":                         {launcher: before, mode: "gdb", pidFile: dom0PIDFile, argv: recorded, qemuPID: 9, state: Stale},
		"pidfile but no argv":                               {launcher: before, mode: ModePassThrough, pidFile: dom0PIDFile, state: Unknown, why: "-xen-domid"},
		"only the domid compared":                           {launcher: before, mode: ModePassThrough, pidFile: dom0PIDFile, argv: []string{"/bin/sh", "-xen-domid", "0"}, state: Running, pid: daemon.PID},
	} {
		t.Run(name, func(t *testing.T) {
			r := Record{Domid: 0, Kind: "qdisk", Mode: tt.mode, Launcher: tt.launcher, QEMUPID: tt.qemuPID, Argv: tt.argv, PIDFile: tt.pidFile}
			check := func(what string, state State, pid int, err error) {
				assert.Equal(t, tt.state, state, what)
				assert.Equal(t, tt.pid, pid, what)
				if tt.why == "" {
					assert.NoError(t, err, what)
					return
				}
				var bad *PIDFileError
				require.ErrorAs(t, err, &bad, what)
				assert.Contains(t, err.Error(), tt.why, what)
			}
			state, pid, err := r.Follow(os.Geteuid())
			check("Record.Follow", state, pid, err)

			// dmlaunch's own reader agrees, but cannot tell starting.
			s, err := ParseSummary(r.appendJSON(nil))
			require.NoError(t, err)
			if tt.state == Starting {
				tt.state = Running
			}
			state, pid, err = s.Follow(os.Geteuid())
			check("Summary.Follow", state, pid, err)
		})
	}
}

func TestSweepEndedRemovesOnlyEndedRecords(t *testing.T) {
	dir := t.TempDir()
	self, err := proc.Self()
	require.NoError(t, err)
	gone := proc.Identity{PID: gonePID(t), StartTime: 1}
	pidFile := pidFilePath(t)
	standIn(t, pidFile, "-xen-domid", "0", "-daemonize")
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
	pidFile := pidFilePath(t)
	standIn(t, pidFile, "-xen-domid", "0", "-daemonize")
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
