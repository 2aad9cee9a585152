package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func dmctl(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errb bytes.Buffer
	status = run(args, &out, &errb, nil)
	return out.String(), errb.String(), status
}

func TestHelpOnEveryCommand(t *testing.T) {
	out, _, status := dmctl(t, "--help")
	assert.Equal(t, 0, status)
	for _, c := range commands {
		assert.Contains(t, out, "  "+c.name)
		t.Run(c.name, func(t *testing.T) {
			out, _, status := dmctl(t, c.name, "--help")
			assert.Equal(t, 0, status)
			assert.Contains(t, out, "Usage: dmctl "+c.name)
			assert.Contains(t, out, "Example:\n  dmctl "+c.name)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"list", "extra"}, "takes no arguments"},
		{[]string{"domid"}, "needs alloc, release or ls"},
		{[]string{"domid", "release"}, "release needs one DOMID"},
		{[]string{"domid", "release", "x"}, "is not a decimal number"},
		{[]string{"domid", "steal"}, `unknown domid action "steal"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, status := dmctl(t, append([]string{"--state-dir", t.TempDir()}, tt.args...)...)
			assert.Equal(t, exitUsage, status)
			assert.Contains(t, stderr, tt.want)
		})
	}
}

func TestDomidAllocReleaseLs(t *testing.T) {
	t.Setenv("LIBXL_DOMID_REUSE_TIMEOUT", "60")
	dir := filepath.Join(t.TempDir(), "state")
	out, _, status := dmctl(t, "--state-dir", dir, "domid", "alloc", "--name", "test vm")
	require.Equal(t, 0, status)
	assert.Equal(t, "1\n", out)
	out, _, status = dmctl(t, "domid", "alloc", "--state-dir", dir)
	require.Equal(t, 0, status)
	assert.Equal(t, "2\n", out, "--state-dir works after the command too")

	out, _, status = dmctl(t, "--state-dir", dir, "domid", "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `(?m)^1\s+leased\s+manual\s+test vm\s+by hand`, out)
	assert.Regexp(t, `(?m)^2\s+leased\s+manual\s+-\s+by hand`, out)

	_, _, status = dmctl(t, "--state-dir", dir, "domid", "release", "1")
	require.Equal(t, 0, status)
	out, _, _ = dmctl(t, "--state-dir", dir, "domid", "ls")
	assert.Regexp(t, `(?m)^1\s+cooling \(\d+s left\)`, out)

	_, stderr, status := dmctl(t, "--state-dir", dir, "domid", "release", "1")
	assert.Equal(t, exitFailure, status)
	assert.Contains(t, stderr, "domain 1: domid is not leased")

	out, _, _ = dmctl(t, "--state-dir", dir, "domid", "ls", "--json")
	var st struct {
		Leases []struct{ Domid int } `json:"leases"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Leases, 1)
	assert.Equal(t, 2, st.Leases[0].Domid)
}

func TestArgv(t *testing.T) {
	t.Setenv("DMLAUNCH_CONFIG", "")
	t.Setenv("DMLAUNCH_QEMU", "/bin/true")
	out, _, status := dmctl(t, "argv", "--", "4", "-xen-domid", "4", "-name", "a b", "-machine", "xenfv")
	require.Equal(t, 0, status)
	assert.Contains(t, out, "domid:   4 (from -xen-domid, leading argument)")
	assert.Contains(t, out, "argv:\n  /bin/true\n  -xen-domid\n  4\n  -name\n  'a b'\n  -machine\n  xenfv\n")

	_, stderr, status := dmctl(t, "argv", "--", "-xen-domid", "4", "-xen-domid", "5")
	assert.Equal(t, 2, status, "dmlaunch's own exit status for bad input")
	assert.Contains(t, stderr, "-xen-domid says domain 4 but -xen-domid says domain 5")
}

func TestListAgreesWithRegistryAndProc(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	live := exec.Command("sleep", "60")
	require.NoError(t, live.Start())
	defer func() { _ = live.Process.Kill(); _ = live.Wait() }()
	liveID, err := proc.Of(live.Process.Pid)
	require.NoError(t, err)
	gone := exec.Command("true")
	require.NoError(t, gone.Run())

	goneID := proc.Identity{PID: gone.Process.Pid, StartTime: 1}
	for _, r := range []registry.Record{
		{Domid: 3, Name: "alive", Kind: "hvm", Mode: "pass-through", Launcher: liveID, QEMUPID: liveID.PID, Started: time.Now().Add(-90 * time.Second)},
		{Domid: 7, Name: "dead", Kind: "pv", Mode: "pass-through", Launcher: goneID, QEMUPID: gone.Process.Pid},
		{Domid: 8, Name: "killed", Kind: "hvm", Mode: "gdb", Launcher: goneID, QEMUPID: 1},
	} {
		_, err := registry.Write(dir, r)
		require.NoError(t, err)
	}
	// A pass-through launch whose QEMU exited has ended, as every one
	// does at xl destroy: left out unless asked for. A debug-mode
	// launcher gone without removing its record is stale: damage, shown.
	out, stderr, status := dmctl(t, "--state-dir", dir, "list")
	require.Equal(t, 0, status)
	assert.Regexp(t, `(?m)^3\s+alive\s+hvm\s+pass-through\s+`+strconv.Itoa(liveID.PID)+`\s+1m3\ds\s+-\s+-\s+running$`, out)
	assert.NotRegexp(t, `(?m)^7\s`, out, "an ended launch is left out")
	assert.Regexp(t, `(?m)^8\s+killed\s+hvm\s+gdb\s+1\s+-\s+-\s+-\s+stale$`, out)
	assert.Contains(t, stderr, "1 stale records")
	out, _, status = dmctl(t, "--state-dir", dir, "list", "--all")
	require.Equal(t, 0, status)
	assert.Regexp(t, `(?m)^7\s+dead\s+pv\s+pass-through\s+\d+\s+-\s+-\s+-\s+ended$`, out)
	assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 4)

	for _, tt := range []struct {
		args   []string
		states []registry.State
	}{
		{[]string{"list", "--json"}, []registry.State{registry.Running, registry.Stale}},
		{[]string{"list", "--json", "--all"}, []registry.State{registry.Running, registry.Ended, registry.Stale}},
	} {
		out, _, status = dmctl(t, append([]string{"--state-dir", dir}, tt.args...)...)
		require.Equal(t, 0, status)
		var entries []inventory.Entry
		require.NoError(t, json.Unmarshal([]byte(out), &entries))
		var states []registry.State
		for _, en := range entries {
			states = append(states, en.State)
			assert.Equal(t, en.State != registry.Running, en.Stale, "domain %d: stale is set for every launch that is gone (ended or stale): select(.stale|not) takes only live ones", en.Domid)
		}
		assert.Equal(t, tt.states, states, tt.args)
		assert.Equal(t, liveID, entries[0].Launcher)
	}
	assert.Contains(t, out, `"state": "ended"`)

	out, _, status = dmctl(t, "--state-dir", filepath.Join(dir, "none"), "list", "--json")
	require.Equal(t, 0, status)
	assert.Equal(t, "[]\n", out)
}

func TestVersion(t *testing.T) {
	out, _, status := dmctl(t, "version")
	assert.Equal(t, 0, status)
	assert.Regexp(t, `^dmctl \S+\n$`, out)
}

func procSelf() (proc.Identity, error) { return proc.Self() }

func writeRecord(t *testing.T, dir string, domid int, mode, qmp string, launcher proc.Identity) {
	_, err := registry.Write(dir, registry.Record{Domid: domid, Name: "r", Kind: "hvm", Mode: mode, Launcher: launcher,
		QEMUPID: launcher.PID, QEMU: "/usr/libexec/xen-qemu-system-i386", QMP: qmp, Started: time.Now()})
	require.NoError(t, err)
}

// dmctl reads the state directory dmlaunch uses, whatever other settings
// are wrong; when that very setting (or the file that may hold it) is
// unusable it says so instead of reading another directory.
func TestStateDirFromSettingsDespiteOtherProblems(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	t.Setenv("DMLAUNCH_CONFIG", "")
	t.Setenv("DMLAUNCH_STATE_DIR", dir)
	t.Setenv("DMLAUNCH_DEBUGG", "gdb")
	t.Setenv("DMLAUNCH_GDB_LISTEN", "nowhere")
	out, stderr, status := dmctl(t, "domid", "alloc")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "1\n", out)
	_, err := os.Stat(filepath.Join(dir, "domids"))
	assert.NoError(t, err, "the lease is in DMLAUNCH_STATE_DIR")

	t.Setenv("DMLAUNCH_CONFIG", "/dev/zero")
	_, stderr, status = dmctl(t, "domid", "ls")
	assert.Equal(t, 0, status, "DMLAUNCH_STATE_DIR from the environment needs no file: %s", stderr)

	for _, tt := range []struct{ env, value, want string }{
		{"DMLAUNCH_STATE_DIR", "run/dmlaunch", `DMLAUNCH_STATE_DIR="run/dmlaunch" (environment) must be an absolute path; give --state-dir, or fix the setting`},
		{"DMLAUNCH_CONFIG", "/dev/zero", `DMLAUNCH_CONFIG="/dev/zero" (environment) is not a regular file`},
	} {
		t.Run(tt.env, func(t *testing.T) {
			if tt.env == "DMLAUNCH_CONFIG" {
				os.Unsetenv("DMLAUNCH_STATE_DIR")
			}
			t.Setenv(tt.env, tt.value)
			_, stderr, status := dmctl(t, "list")
			assert.Equal(t, exitUsage, status)
			assert.Contains(t, stderr, tt.want)
			out, _, status := dmctl(t, "version")
			assert.Equal(t, 0, status, "version reads no state")
			assert.Contains(t, out, "dmctl ")
			_, _, status = dmctl(t, "--state-dir", dir, "list")
			assert.Equal(t, 0, status, "--state-dir needs no setting")
		})
	}
}
