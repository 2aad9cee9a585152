package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/mattn/go-runewidth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// liveProcess is a process that runs for the test, to hold leases and
// stand behind records.
func liveProcess(t *testing.T) proc.Identity {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := proc.Of(cmd.Process.Pid)
	require.NoError(t, err)
	return id
}

func deadProcess(t *testing.T) proc.Identity {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return proc.Identity{PID: cmd.Process.Pid, StartTime: 1}
}

func TestListColumnsHoldWhateverTheNamesHold(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live := liveProcess(t)
	names := []string{"plain", "tab\there", "new\nline", "wide 漢字ゲスト", "esc \x1b[31mred", "rlo \u202eevil", `back\slash`, "bad \xff utf8"}
	for i, n := range names {
		_, err := registry.Write(dir, registry.Record{Domid: i + 1, Name: n, Kind: "hvm", Mode: "pass-through", Launcher: live, QEMUPID: live.PID, Started: time.Now()})
		require.NoError(t, err)
	}
	out, _, status := dmctl(t, "--state-dir", dir, "list")
	require.Equal(t, 0, status)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(names)+1, "one line per launch:\n%s", out)
	kindAt := func(line string) int {
		i := strings.Index(line, "  hvm  ")
		if strings.HasPrefix(line, "DOMID") {
			i = strings.Index(line, "  KIND  ")
		}
		require.GreaterOrEqual(t, i, 0, "line %q", line)
		return runewidth.StringWidth(line[:i])
	}
	for _, l := range lines {
		assert.Equal(t, kindAt(lines[0]), kindAt(l), "the KIND column starts at one screen column:\n%s", out)
		for _, r := range l {
			assert.False(t, r < 0x20 || r == 0x7f || r == 0x202e, "control character %U shown raw in %q", r, l)
		}
	}
	for _, want := range []string{`tab\there`, `new\nline`, `esc \x1b[31mred`, `rlo \xe2\x80\xaeevil`, "back\\slash", "bad \ufffd utf8", "wide 漢字ゲスト"} {
		assert.Contains(t, out, want)
	}
}

func TestListSkipsABadRecordAndNamesIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live := liveProcess(t)
	writeRecord(t, dir, 8, "gdb", filepath.Join(dir, "8.qmp"), live)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "3.json"), []byte(`{"domid":3,"name":"tru`), 0o600))
	require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, "4.json")))

	out, stderr, status := dmctl(t, "--state-dir", dir, "list")
	assert.Equal(t, 0, status)
	assert.Regexp(t, `(?m)^8\s+r\s+hvm\s+gdb\s+`, out)
	assert.Contains(t, stderr, filepath.Join(dir, "3.json")+" is damaged")
	assert.Contains(t, stderr, filepath.Join(dir, "4.json")+" is a symbolic link")

	// Reaching another domain does not care about the bad record; reaching
	// the bad one says what is wrong with it.
	en, err := lookup(&env{stateDir: dir}, "8")
	require.NoError(t, err)
	assert.Equal(t, live, en.Launcher)
	_, err = lookup(&env{stateDir: dir}, "3")
	assert.ErrorContains(t, err, "3.json is damaged")
}

// snapshot is every file of a directory with its content and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	_ = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		out[path] = fi.ModTime().String() + " " + string(b)
		return nil
	})
	return out
}

func TestReadOnlyCommandsWriteNothing(t *testing.T) {
	t.Setenv("DMLAUNCH_CONFIG", "")
	t.Setenv("DMLAUNCH_QEMU", "/bin/true")
	missing := filepath.Join(t.TempDir(), "state")
	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"domid", "ls"}, {"domid", "ls", "--json"}, {"argv", "--", "-name", "x", "-machine", "xenfv"}} {
		_, stderr, status := dmctl(t, append([]string{"--state-dir", missing}, args...)...)
		assert.Equal(t, 0, status, "%v: %s", args, stderr)
		assert.NoDirExists(t, missing, "%v created the state directory", args)
	}

	// A damaged lease file is shown rebuilt, and left for a launch to
	// repair: not moved, not rewritten, no lock file made.
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live := liveProcess(t)
	writeRecord(t, dir, 12, "pass-through", "", live)
	writeRecord(t, dir, 13, "pass-through", "", deadProcess(t)) // ended: shown, not removed
	require.NoError(t, os.WriteFile(filepath.Join(dir, domid.LeaseFile), []byte("garbage"), 0o600))
	before := snapshot(t, dir)
	out, stderr, status := dmctl(t, "--state-dir", dir, "domid", "ls")
	assert.Equal(t, 0, status)
	assert.Contains(t, stderr, "is damaged")
	assert.Regexp(t, `(?m)^12\s+given\s+hvm\s+r\s+pid `+strconv.Itoa(live.PID), out, "the rebuilt view holds the live launch")
	for _, args := range [][]string{{"list"}, {"list", "--all", "--json"}, {"gdb", "--print", "13"}, {"domid", "ls", "--json"}, {"argv", "--", "-name", "x", "-machine", "xenfv"}} {
		_, _, status := dmctl(t, append([]string{"--state-dir", dir}, args...)...)
		if args[0] == "gdb" {
			assert.Equal(t, exitFailure, status, "domain 13 has ended")
			continue
		}
		assert.Equal(t, 0, status)
	}
	assert.Equal(t, before, snapshot(t, dir), "read-only commands changed the state directory")
}

func TestReleaseOfALiveHolderNeedsForce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	live := liveProcess(t)
	a := domid.NewAllocator(dir)
	_, err := a.Acquire(domid.Request{Domid: 9, Kind: "hvm", Holder: live})
	require.NoError(t, err)
	_, err = a.Acquire(domid.Request{Domid: 10, Kind: "hvm", Holder: deadProcess(t)})
	require.NoError(t, err)

	_, stderr, status := dmctl(t, "--state-dir", dir, "domid", "release", "9")
	assert.Equal(t, exitFailure, status)
	assert.Contains(t, stderr, "domain 9 is held by process "+strconv.Itoa(live.PID))
	assert.Contains(t, stderr, "--force")
	_, _, status = dmctl(t, "--state-dir", dir, "domid", "release", "10")
	assert.Equal(t, 0, status, "a dead holder's lease goes without --force")
	_, _, status = dmctl(t, "--state-dir", dir, "domid", "release", "9", "--force")
	assert.Equal(t, 0, status)
	st, err := a.List()
	require.NoError(t, err)
	assert.Empty(t, st.Leases)
}

func TestPrune(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live, dead := liveProcess(t), deadProcess(t)
	writeRecord(t, dir, 2, "pass-through", "", live)
	writeRecord(t, dir, 4, "pass-through", "", dead)
	qmp := filepath.Join(dir, "3.qmp")
	writeRecord(t, dir, 3, "gdb", qmp, dead)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrUnix{Name: qmp}))
	syscall.Close(fd)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "5.json"), []byte("{"), 0o600))
	leftover := filepath.Join(dir, "domids.new."+strconv.Itoa(dead.PID)+".1.x")
	require.NoError(t, os.WriteFile(leftover, nil, 0o600))
	mine := filepath.Join(dir, "7.json.new."+strconv.Itoa(live.PID)+".1.x")
	require.NoError(t, os.WriteFile(mine, nil, 0o600))
	// dom0's QEMU, daemonized: killed, it left its pidfile (no process
	// holds its lock): the daemon's pid is the one prune names.
	pidDir := t.TempDir()
	leftPIDFile := filepath.Join(pidDir, "qemu-dom0.pid")
	require.NoError(t, os.WriteFile(leftPIDFile, []byte("4242\n"), 0o644))
	writeDaemonized := func(domid int, pidFile string) {
		_, err := registry.Write(dir, registry.Record{Domid: domid, Name: "dom0", Kind: "qdisk", Mode: "pass-through", Launcher: dead,
			QEMUPID: dead.PID, QEMU: "/usr/libexec/xen-qemu-system-i386", Started: time.Now(), PIDFile: pidFile,
			Argv: []string{"/usr/libexec/xen-qemu-system-i386", "-xen-domid", strconv.Itoa(domid), "-daemonize", "-pidfile", pidFile}})
		require.NoError(t, err)
	}
	writeDaemonized(0, leftPIDFile)
	// A pidfile others may write is not followed: the launch's state is
	// unknown and its record stays.
	untrusted := filepath.Join(pidDir, "untrusted.pid")
	require.NoError(t, os.WriteFile(untrusted, []byte("4243\n"), 0o666))
	require.NoError(t, os.Chmod(untrusted, 0o666))
	writeDaemonized(1, untrusted)

	listed, stderr, status := dmctl(t, "--state-dir", dir, "list")
	require.Equal(t, 0, status, stderr)
	assert.Regexp(t, `(?m)^1\s+dom0\s+qdisk\s+.*unknown$`, listed, "an unknown launch is listed without --all")
	assert.Contains(t, stderr, "dmctl list: domain 1: state unknown, record kept: pidfile "+untrusted+" has mode 0666, writable by others")

	before := snapshot(t, dir)
	out, _, status := dmctl(t, "--state-dir", dir, "prune", "--dry-run")
	require.Equal(t, 0, status)
	assert.Contains(t, out, "would remove "+filepath.Join(dir, "3.json")+": domain 3 (r), launcher pid "+strconv.Itoa(dead.PID)+" gone")
	assert.Contains(t, out, "would remove "+filepath.Join(dir, "4.json")+": domain 4 (r), ended, its QEMU (pid "+strconv.Itoa(dead.PID)+") exited")
	assert.Contains(t, out, "would remove "+filepath.Join(dir, "0-qdisk.json")+": domain 0 (dom0), ended, its daemonized QEMU (pid 4242, pidfile "+leftPIDFile+") exited")
	assert.NotContains(t, out, "1-qdisk.json")
	assert.Equal(t, before, snapshot(t, dir), "a dry run removes nothing")

	out, stderr, status = dmctl(t, "--state-dir", dir, "prune")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, out, "removed "+filepath.Join(dir, "3.json"))
	assert.NoFileExists(t, filepath.Join(dir, "3.json"))
	assert.NoFileExists(t, qmp, "the stale record's QMP socket goes too")
	assert.NoFileExists(t, filepath.Join(dir, "4.json"), "an ended launch's record goes")
	assert.FileExists(t, filepath.Join(dir, "2.json"), "a live launch's record stays")
	assert.NoFileExists(t, filepath.Join(dir, "0-qdisk.json"), "an ended daemonized launch's record goes")
	assert.FileExists(t, filepath.Join(dir, "1-qdisk.json"), "a launch whose pidfile cannot be trusted may run: its record stays")
	assert.NoFileExists(t, leftover, "a killed writer's temporary file goes")
	assert.FileExists(t, mine, "a running writer's temporary file stays")
	assert.FileExists(t, filepath.Join(dir, "5.json"), "a bad record stays without --bad")
	assert.Contains(t, stderr, "5.json is damaged")

	_, _, status = dmctl(t, "--state-dir", dir, "prune", "--bad")
	require.Equal(t, 0, status)
	assert.NoFileExists(t, filepath.Join(dir, "5.json"))

	out, _, status = dmctl(t, "--state-dir", filepath.Join(dir, "none"), "prune")
	assert.Equal(t, 0, status)
	assert.Contains(t, out, "does not exist")
	assert.NoDirExists(t, filepath.Join(dir, "none"))
}

// A debug-mode launch records itself when it takes its lease, before
// QEMU starts: list shows it as starting, and the commands that need its
// QEMU say it is not there yet instead of calling it another mode.
func TestAStartingLaunchIsShownAsStarting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live := liveProcess(t)
	_, err := registry.Write(dir, registry.Record{Domid: 6, Name: "early", Kind: "hvm", Mode: "gdb-wait", Launcher: live,
		QEMU: "/usr/libexec/xen-qemu-system-i386", Started: time.Now()})
	require.NoError(t, err)

	out, stderr, status := dmctl(t, "--state-dir", dir, "list")
	require.Equal(t, 0, status, stderr)
	assert.Regexp(t, `(?m)^6\s+early\s+hvm\s+gdb-wait\s+-\s+-\s+-\s+-\s+starting$`, out)
	assert.NotContains(t, stderr, "stale")

	out, _, status = dmctl(t, "--state-dir", dir, "list", "--json")
	require.Equal(t, 0, status)
	assert.Contains(t, out, `"starting": true`)
	assert.Contains(t, out, `"qemu_pid": 0`)

	for _, cmd := range [][]string{{"gdb", "--print", "6"}, {"console", "6"}, {"monitor", "6", "--command", "info status"}} {
		_, stderr, status := dmctl(t, append([]string{"--state-dir", dir}, cmd...)...)
		assert.NotEqual(t, 0, status, cmd)
		assert.Contains(t, stderr, fmt.Sprintf("domain 6: its launch (launcher pid %d) is starting and QEMU does not run yet", live.PID), cmd)
	}
}

// A pass-through launch whose QEMU exited has ended: the commands that
// reach a QEMU say so, and do not call the record damage.
func TestAnEndedLaunchIsSaidToHaveEnded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	dead := deadProcess(t)
	writeRecord(t, dir, 9, "pass-through", "", dead)
	for _, cmd := range [][]string{{"gdb", "--print", "9"}, {"console", "9"}, {"monitor", "9", "--command", "info status"}} {
		_, stderr, status := dmctl(t, append([]string{"--state-dir", dir}, cmd...)...)
		want := exitFailure
		if cmd[0] == "monitor" {
			want = exitMonitorNotSent
		}
		assert.Equal(t, want, status, cmd)
		assert.Contains(t, stderr, fmt.Sprintf("domain 9: its pass-through launch has ended, its QEMU (pid %d) exited", dead.PID), cmd)
		assert.NotContains(t, stderr, "stale", cmd)
	}
}
