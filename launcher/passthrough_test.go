package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

type run struct {
	bin     string
	args    []string
	env     []string
	extra   []*os.File
	state   string
	report  string
	stdout  string
	stderr  string
	status  int
	pid     int
	started bool
	fake    FakeReport
}

// launch runs dmlaunch with the test binary as its QEMU, in a clean
// environment of its own.
func launch(t *testing.T, r run) run {
	t.Helper()
	dir := t.TempDir()
	if r.bin == "" {
		r.bin = dmlaunchBin
	}
	if r.state == "" {
		r.state = filepath.Join(dir, "state")
	}
	r.report = filepath.Join(dir, "report.json")
	cmd := exec.Command(r.bin, r.args...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"DMLAUNCH_CONFIG=",
		"DMLAUNCH_STATE_DIR=" + r.state,
		"DMLAUNCH_QEMU=" + os.Args[0],
		"FAKE_QEMU_REPORT=" + r.report,
		"LIBXL_DOMID_REUSE_TIMEOUT=0",
	}, r.env...)
	cmd.ExtraFiles = r.extra
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	require.NoError(t, err)
	r.pid = cmd.Process.Pid
	// A launch that blocks (on a FIFO, say) fails the test, not the run.
	timer := time.AfterFunc(time.Minute, func() {
		t.Errorf("dmlaunch %q did not finish within a minute; killed", r.args)
		_ = cmd.Process.Kill()
	})
	err = cmd.Wait()
	timer.Stop()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.status = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	r.stdout, r.stderr = stdout.String(), stderr.String()
	r.fake, r.started = readReport(r.report)
	if t.Failed() || r.status != 0 {
		t.Logf("dmlaunch %q exited %d\nstderr: %s", r.args, r.status, r.stderr)
	}
	return r
}

func TestPassThroughExecsInPlace(t *testing.T) {
	f3, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f3.Close()
	f7, err := os.CreateTemp(t.TempDir(), "restore-stream")
	require.NoError(t, err)
	defer f7.Close()

	name := `guest with spaces 'quotes' & $(metachars) "`
	r := launch(t, run{
		args:  []string{"5", "-xen-domid", "5", "-name", name, "-machine", "xenfv", "-incoming", "fd:7"},
		extra: []*os.File{f3, nil, nil, nil, f7},
		env:   []string{"SOME_TOOLSTACK_VAR=kept"},
	})
	require.True(t, r.started, "the fake QEMU ran")
	assert.Equal(t, 0, r.status)
	assert.Equal(t, r.pid, r.fake.PID, "QEMU runs in the launcher's process: the pid libxl recorded")
	assert.Equal(t, []string{os.Args[0], "-xen-domid", "5", "-name", name, "-machine", "xenfv", "-incoming", "fd:7"}, r.fake.Argv,
		"the leading domid is gone and every other word is unchanged")
	assert.Equal(t, "5", r.fake.Env["XEN_DOMAIN_ID"], "XEN_DOMAIN_ID is added when the toolstack did not set it")
	assert.Equal(t, "kept", r.fake.Env["SOME_TOOLSTACK_VAR"])
	assert.Equal(t, "/dev/null", r.fake.FDs[3], "fd 3 reaches QEMU at the same number")
	assert.Equal(t, f7.Name(), r.fake.FDs[7], "fd 7 reaches QEMU at the same number")
	allowed := append([]int{0, 1, 2, 3, 7}, inheritableFDs(t)...)
	for _, fd := range sortedFDs(r.fake.FDs) {
		assert.Contains(t, allowed, fd, "fd %d (%s) leaked into QEMU", fd, r.fake.FDs[fd])
	}

	// One log line, and its command line pastes back into a shell intact.
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	require.Len(t, lines, 1)
	assert.Contains(t, lines[0], "dmlaunch: domain 5 (guest with spaces")
	assert.Contains(t, lines[0], "hvm, domid from -xen-domid, pass-through: ")
	_, quoted, _ := strings.Cut(lines[0], "pass-through: ")
	out, err := exec.Command("sh", "-c", `for a in `+quoted+`; do printf '%s\0' "$a"; done`).Output()
	require.NoError(t, err)
	assert.Equal(t, r.fake.Argv, strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"))

	// The record was written before the exec and names the process.
	entries, err := inventory.List(r.state)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	e := entries[0]
	assert.Equal(t, 5, e.Domid)
	assert.Equal(t, name, e.Name)
	assert.Equal(t, "hvm", e.Kind)
	assert.Equal(t, ModePassThrough, e.Mode)
	assert.Equal(t, r.pid, e.Launcher.PID)
	assert.Equal(t, r.pid, e.QEMUPID)
	assert.Equal(t, r.fake.Argv, e.Argv)
	assert.Equal(t, registry.Ended, e.State, "QEMU has exited, so the launch has ended")
	assert.True(t, e.Stale, "stale is set for every launch that is gone, ended ones too (state tells them apart)")
	fi, err := os.Stat(e.Path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestPassThroughCoreLimitOnlyWhenAsked(t *testing.T) {
	var own unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_CORE, &own))
	args := []string{"-xen-domid", "5", "-machine", "xenfv"}
	r := launch(t, run{args: args})
	require.True(t, r.started)
	assert.Equal(t, own.Cur, r.fake.CoreLimit, "unset: QEMU inherits the toolstack's limit")
	want := min(own.Max, 8<<20)
	r = launch(t, run{args: args, env: []string{"DMLAUNCH_CORE_LIMIT=" + strconv.FormatUint(want, 10)}})
	require.True(t, r.started)
	assert.Equal(t, want, r.fake.CoreLimit, "set: pass-through applies it before the exec")
	assert.Equal(t, r.pid, r.fake.PID)
}

func TestXenDomainIDFromEnvironmentIsKept(t *testing.T) {
	r := launch(t, run{args: []string{"-xen-domid", "8", "-machine", "xenfv"}, env: []string{"XEN_DOMAIN_ID=8"}})
	require.True(t, r.started)
	assert.Equal(t, "8", r.fake.Env["XEN_DOMAIN_ID"])
	assert.Equal(t, 1, strings.Count(strings.Join(envList(r.fake.Env), "\n"), "XEN_DOMAIN_ID="))
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

func TestLaunchWithoutDomidGetsALease(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	r := launch(t, run{args: []string{"-name", "nodomid", "-machine", "pc"}, state: state})
	require.True(t, r.started)
	assert.Equal(t, "1", r.fake.Env["XEN_DOMAIN_ID"], "the leased domid is passed on")
	assert.Contains(t, r.stderr, "domain 1 (nodomid): unknown, domid from lease")
	st, err := os.ReadFile(filepath.Join(state, domid.LeaseFile))
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^lease 1 "unknown" \d+ \d+ 1 `, string(st), "an allocated lease")
}

func TestProbeTakesNoDomidAndNoLease(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	r := launch(t, run{args: strings.Fields("-S -no-user-config -nodefaults -nographic -machine none,accel=xen"), state: state})
	require.True(t, r.started)
	assert.Equal(t, 0, r.status)
	_, hasDomid := r.fake.Env["XEN_DOMAIN_ID"]
	assert.False(t, hasDomid)
	assert.Contains(t, r.stderr, "dmlaunch: capability probe: probe, pass-through")
	_, err := os.Stat(filepath.Join(state, domid.LeaseFile))
	assert.True(t, os.IsNotExist(err), "no lease taken")
}

func TestSecondLiveLaunchForADomidIsRefused(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	report := filepath.Join(t.TempDir(), "first.json")
	first := exec.Command(dmlaunchBin, "-xen-domid", "4", "-machine", "xenfv")
	first.Env = []string{"DMLAUNCH_CONFIG=", "DMLAUNCH_STATE_DIR=" + state, "DMLAUNCH_QEMU=" + os.Args[0],
		"FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1"}
	require.NoError(t, first.Start())
	defer func() { _ = first.Process.Kill(); _ = first.Wait() }()
	require.Eventually(t, func() bool { _, ok := readReport(report); return ok }, 10*time.Second, 10*time.Millisecond)

	second := launch(t, run{args: []string{"-xen-domid", "4", "-machine", "xenfv"}, state: state})
	assert.False(t, second.started, "QEMU must not start")
	assert.Equal(t, ExitBadInput, second.status)
	assert.Contains(t, second.stderr, fmt.Sprintf("domain 4 already has a live hvm device model, held by process %d", first.Process.Pid))

	other := launch(t, run{args: []string{"-xen-domid", "4", "-xen-attach", "-M", "xenpv", "-monitor", "/dev/null", "-serial", "/dev/null", "-parallel", "/dev/null"}, state: state})
	assert.True(t, other.started, "a qdisk backend for the same domain takes no lease and is not refused")

	require.NoError(t, first.Process.Kill())
	_ = first.Wait()
	again := launch(t, run{args: []string{"-xen-domid", "4", "-machine", "xenfv"}, state: state})
	assert.True(t, again.started, "once the holder is gone, its lease is reaped")
}

// inheritableFDs are the fds this test process has open without
// close-on-exec: every child inherits them, whatever dmlaunch does (a
// harness may leave some open).
func inheritableFDs(t *testing.T) []int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var out []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			out = append(out, fd)
		}
	}
	return out
}

// A guest name or argv word with control characters cannot break the
// one-line log or rewrite the operator's terminal; the quoted command line
// still pastes back into bash word for word.
func TestLogLineEscapesControlCharacters(t *testing.T) {
	name := "evil\nname\x1b[2J\r\u202e"
	args := []string{"-xen-domid", "5", "-name", name, "-machine", "xenfv", "-drive", "file=/tmp/a\tb,format=raw"}
	r := launch(t, run{args: args})
	require.True(t, r.started)
	assert.Equal(t, args, r.fake.Argv[1:], "QEMU gets every byte as it was")
	line := strings.TrimSuffix(r.stderr, "\n")
	require.NotContains(t, line, "\n", "one line")
	for _, c := range line {
		assert.False(t, c < 0x20 || c == 0x7f || c == '\u202e', "%U reaches the log as it is", c)
	}
	assert.Contains(t, line, `dmlaunch: domain 5 (evil\nname\x1b[2J\r\xe2\x80\xae): hvm`)
	_, quoted, _ := strings.Cut(line, "pass-through: ")
	out, err := exec.Command("bash", "-c", `for a in `+quoted+`; do printf '%s\0' "$a"; done`).Output()
	require.NoError(t, err)
	assert.Equal(t, r.fake.Argv, strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"))
}

// A pass-through launch execs QEMU, so nothing of dmlaunch is left to
// remove its record when QEMU exits (xl destroy). A guest's launch removes
// every ended record under the lease lock: in a debug mode always, in
// pass-through when the lease allocator's full reap is due (at most every
// 10 s; reading every record costs each launch about 20 us a record).
// Running launches, stale records (damage, which dmctl doctor reports)
// and a backend's launch (it takes no lease) leave records be.
func TestLaunchesSweepEndedRecords(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	exists := func(names ...string) []string {
		var out []string
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(state, n)); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	guest := func(d int) []string { return []string{"-xen-domid", strconv.Itoa(d), "-machine", "xenfv"} }
	qdisk := func(d int) []string {
		return []string{"-xen-domid", strconv.Itoa(d), "-xen-attach", "-M", "xenpv", "-monitor", "/dev/null", "-serial", "/dev/null", "-parallel", "/dev/null"}
	}
	for _, args := range [][]string{guest(4), qdisk(5)} {
		require.True(t, launch(t, run{args: args, state: state}).started)
	}
	self, err := proc.Self()
	require.NoError(t, err)
	gone := proc.Identity{PID: 1 << 22, StartTime: 1} // beyond pid_max: never runs
	for _, r := range []registry.Record{
		{Domid: 8, Kind: "hvm", Mode: "gdb", Launcher: gone, QEMUPID: 1},
		{Domid: 9, Kind: "hvm", Mode: ModePassThrough, Launcher: self, QEMUPID: self.PID},
	} {
		_, err := registry.Write(state, r)
		require.NoError(t, err)
	}
	all := []string{"4.json", "5-qdisk.json", "6.json", "6-qdisk.json", "7.json", "8.json", "9.json", "10.json"}
	require.Equal(t, []string{"4.json", "5-qdisk.json", "8.json", "9.json"}, exists(all...))

	require.True(t, launch(t, run{args: qdisk(6), state: state}).started)
	require.True(t, launch(t, run{args: guest(6), state: state}).started)
	assert.Equal(t, []string{"4.json", "5-qdisk.json", "6.json", "8.json", "9.json"}, exists(all...),
		"a backend takes no lease and sweeps nothing; a pass-through launch between full reaps only replaces its domain's records")

	// Ten seconds later, as far as the lease file knows: a full reap is due.
	leases := filepath.Join(state, domid.LeaseFile)
	b, err := os.ReadFile(leases)
	require.NoError(t, err)
	due := regexp.MustCompile(`(?m)^reaped [0-9.]+$`).ReplaceAll(b, []byte("reaped 0"))
	require.NotEqual(t, string(b), string(due))
	require.NoError(t, os.WriteFile(leases, due, 0o600))
	require.True(t, launch(t, run{args: guest(10), state: state}).started)
	assert.Equal(t, []string{"8.json", "9.json", "10.json"}, exists(all...),
		"the pass-through launch that reaps removed every ended record; its own QEMU has exited since")

	r := launch(t, run{args: append(guest(7), "-serial", "pty"), state: state,
		env: []string{"DMLAUNCH_DEBUG=console", "DMLAUNCH_LOG_DIR=" + t.TempDir()}})
	require.True(t, r.started)
	assert.Equal(t, 0, r.status)
	assert.Equal(t, []string{"8.json", "9.json"}, exists(all...),
		"a debug-mode launch sweeps whenever it starts, and removes its own record when it ends")
}
