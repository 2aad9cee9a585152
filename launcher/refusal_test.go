package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRefusals(t *testing.T) {
	tmp := t.TempDir()
	symlinkToSelf := filepath.Join(tmp, "qemu-symlink")
	require.NoError(t, os.Symlink(dmlaunchBin, symlinkToSelf))
	hardlinkToSelf := filepath.Join(tmp, "qemu-hardlink")
	require.NoError(t, os.Link(dmlaunchBin, hardlinkToSelf))
	notExec := filepath.Join(tmp, "qemu-noexec")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	badConf := filepath.Join(tmp, "bad.conf")
	require.NoError(t, os.WriteFile(badConf, []byte("DMLAUNCH_DEBUG=sometimes\n"), 0o644))
	looseState := filepath.Join(tmp, "loose")
	require.NoError(t, os.Mkdir(looseState, 0o700))
	require.NoError(t, os.Chmod(looseState, 0o777))

	hvm := []string{"-xen-domid", "5", "-name", "hvm1", "-machine", "xenfv"}
	tests := []struct {
		name   string
		bin    string
		args   []string
		env    []string
		state  string
		status int
		want   []string
	}{
		{name: "domid not a number", args: []string{"-xen-domid", "five", "-machine", "xenfv"}, status: 2,
			want: []string{`dmlaunch: domid "five" from -xen-domid is not a decimal number; the toolstack's -xen-domid, XEN_DOMAIN_ID and DMLAUNCH_DOMID must name one domain`}},
		{name: "domid negative", args: []string{"-xen-domid", "-3", "-machine", "xenfv"}, status: 2, want: []string{"is negative"}},
		{name: "domid reserved", args: []string{"-xen-domid", "32752", "-machine", "xenfv"}, status: 2, want: []string{"reserved"}},
		{name: "env disagrees", args: hvm, env: []string{"XEN_DOMAIN_ID=6"}, status: 2,
			want: []string{"dmlaunch: domain ? (hvm1): -xen-domid says domain 5 but XEN_DOMAIN_ID says domain 6"}},
		{name: "leading disagrees", args: append([]string{"7"}, hvm...), status: 2, want: []string{"-xen-domid says domain 5 but leading argument says domain 7"}},
		{name: "setting disagrees", args: hvm, env: []string{"DMLAUNCH_DOMID=9"}, status: 2, want: []string{"DMLAUNCH_DOMID says domain 9"}},
		{name: "missing option value", args: []string{"-xen-domid", "5", "-machine"}, status: 2,
			want: []string{"option -machine needs a value but is the last word", "device_model_args"}},
		{name: "unknown setting", args: hvm, env: []string{"DMLAUNCH_GDB_PORT=1"}, status: 2, want: []string{"DMLAUNCH_GDB_PORT", "is not a dmlaunch setting"}},
		{name: "malformed setting", args: hvm, env: []string{"DMLAUNCH_DRY_RUN=perhaps"}, status: 2, want: []string{"DMLAUNCH_DRY_RUN", "must be 1 or 0"}},
		{name: "bad config file", args: hvm, env: []string{"DMLAUNCH_CONFIG=" + badConf}, status: 2, want: []string{badConf + " line 1", "unknown mode"}},
		{name: "unsafe state dir", args: hvm, state: looseState, status: 2, want: []string{"writable by others"}},
		{name: "itself as QEMU", args: hvm, env: []string{"DMLAUNCH_QEMU=" + dmlaunchBin}, status: 126,
			want: []string{"dmlaunch: domain 5 (hvm1): " + dmlaunchBin + " is dmlaunch itself; set DMLAUNCH_QEMU"}},
		{name: "itself through a symlink", args: hvm, env: []string{"DMLAUNCH_QEMU=" + symlinkToSelf}, status: 126, want: []string{"is dmlaunch itself"}},
		{name: "itself through a hard link", args: hvm, env: []string{"DMLAUNCH_QEMU=" + hardlinkToSelf}, status: 126, want: []string{"is dmlaunch itself"}},
		{name: "QEMU not executable", args: hvm, env: []string{"DMLAUNCH_QEMU=" + notExec}, status: 126, want: []string{notExec + " is not executable"}},
		{name: "QEMU missing", args: hvm, env: []string{"DMLAUNCH_QEMU=/nonexistent/qemu"}, status: 126, want: []string{"/nonexistent/qemu cannot be read"}},
		{name: "no QEMU anywhere", bin: dmlaunchNoQEMUBin, args: hvm, env: []string{"DMLAUNCH_QEMU="}, status: 127,
			want: []string{"no real QEMU found; looked at ", ".distrib (missing)", "/nonexistent/xen-qemu (missing)", "install qemu-system-xen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := launch(t, run{bin: tt.bin, args: tt.args, env: tt.env, state: tt.state})
			assert.Equal(t, tt.status, r.status)
			assert.False(t, r.started, "QEMU must never start")
			for _, w := range tt.want {
				assert.Contains(t, r.stderr, w)
			}
			assert.Empty(t, r.stdout)
			entries, err := inventory.List(r.state)
			if tt.state == "" {
				require.NoError(t, err)
			}
			assert.Empty(t, entries, "no registry record is left behind")
			if b, err := os.ReadFile(filepath.Join(r.state, domid.LeaseFile)); err == nil {
				assert.NotContains(t, string(b), "lease 5 ", "no lease is left behind")
			}
		})
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	r := launch(t, run{
		args:  []string{"3", "-xen-domid", "3", "-name", "web 1", "-machine", "xenfv,suppress-vmdesc=on", "-frob"},
		env:   []string{"DMLAUNCH_DRY_RUN=1"},
		state: state,
	})
	assert.Equal(t, 0, r.status)
	assert.False(t, r.started, "a dry run execs nothing")
	for _, w := range []string{
		"domid:   3 (from -xen-domid, leading argument)",
		"kind:    hvm",
		"name:    'web 1'",
		"mode:    pass-through",
		"qemu:    " + os.Args[0],
		"rewrite: strip-leading-domid",
		"note:    options this QEMU table does not know, passed on as they are: -frob",
		"argv:\n  " + os.Args[0] + "\n  -xen-domid\n  3\n  -name\n  'web 1'\n  -machine\n  xenfv,suppress-vmdesc=on\n  -frob\n",
	} {
		assert.Contains(t, r.stdout, w)
	}
	_, err := os.Stat(state)
	assert.True(t, os.IsNotExist(err), "a dry run creates no state")
}

func TestDryRunShowsTheLeaseItWouldTake(t *testing.T) {
	r := launch(t, run{args: []string{"-machine", "pc"}, env: []string{"DMLAUNCH_DRY_RUN=1"}})
	assert.Equal(t, 0, r.status)
	assert.Contains(t, r.stdout, "domid:   1 (none given: a lease would be allocated")
	assert.Contains(t, r.stdout, "kind:    unknown")
}

// -version, -help and help values ask QEMU a question: they pass through
// whatever the settings say, and take no lease and write no record.
func TestQueriesTakeNoLeaseAndWriteNoRecord(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"-help"}, {"-machine", "help"}, {"-xen-domid", "5", "-machine", "xenfv", "-device", "e1000,help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			r := launch(t, run{args: args, state: state, env: []string{"DMLAUNCH_DEBUG=gdb"}})
			require.True(t, r.started)
			assert.Equal(t, 0, r.status)
			assert.Equal(t, r.pid, r.fake.PID, "exec'd in place, never supervised")
			assert.Equal(t, args, r.fake.Argv[1:])
			assert.Contains(t, r.stderr, "query, ")
			_, err := os.Stat(state)
			assert.True(t, os.IsNotExist(err), "no state directory, lease or record")
		})
	}
}

// An argv the kernel will not take (E2BIG) is the toolstack's input: exit
// 2, saying so, never 126 with advice about DMLAUNCH_QEMU.
func TestCommandLineTooLongForTheKernel(t *testing.T) {
	// The QEMU's path is longer than dmlaunch's, and dmlaunch adds
	// XEN_DOMAIN_ID: an environment that dmlaunch itself just gets
	// through is too much for the exec of QEMU.
	long := filepath.Join(t.TempDir(), strings.Repeat("q", 200))
	require.NoError(t, os.Symlink(os.Args[0], long))
	state := filepath.Join(t.TempDir(), "state")
	args := []string{"-xen-domid", "5", "-machine", "xenfv"}
	report := filepath.Join(t.TempDir(), "report.json")
	command := func(padding int, extra ...string) *exec.Cmd {
		cmd := exec.Command(dmlaunchBin, args...)
		cmd.Env = append([]string{"DMLAUNCH_CONFIG=", "DMLAUNCH_STATE_DIR=" + state, "DMLAUNCH_QEMU=" + long, "FAKE_QEMU_REPORT=" + report}, extra...)
		for i := 0; padding > 0; i++ {
			chunk := min(padding, 100000)
			cmd.Env = append(cmd.Env, fmt.Sprintf("PAD%d=%s", i, strings.Repeat("x", chunk)))
			padding -= chunk
		}
		return cmd
	}
	// The most environment with which dmlaunch starts, in a dry run (whose
	// setting is longer than what the real launch adds to the kernel's
	// count for dmlaunch, and shorter than what it adds for QEMU).
	starts := func(n int) bool {
		return !errors.Is(command(n, "DMLAUNCH_DRY_RUN=1").Run(), syscall.E2BIG)
	}
	// Linux takes at most a quarter of the stack limit, and never more
	// than 6 MiB (3/4 of _STK_LIM), whatever the stack limit.
	lo, hi := 0, 8<<20
	require.False(t, starts(hi), "8 MiB of environment is beyond any exec limit")
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; starts(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	cmd := command(lo)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "stderr: %s", stderr.String())
	_, started := readReport(report)
	assert.False(t, started)
	assert.Equal(t, ExitBadInput, exit.ExitCode())
	assert.Contains(t, stderr.String(), "dmlaunch: domain 5 (-): the command line is too long for the kernel: 5 words")
	assert.Contains(t, stderr.String(), "shorten device_model_args in the domain's configuration, or the toolstack's environment")
	assert.NotContains(t, stderr.String(), "DMLAUNCH_QEMU")
	entries, err := inventory.List(state)
	require.NoError(t, err)
	assert.Empty(t, entries, "no registry record is left behind")
}

// A dry run in a debug mode shows what the supervisor would run: the
// rewrites, the debug port, the console and the QMP socket; and it fails
// where the launch would, with the same status and words.
func TestDryRunOfADebugMode(t *testing.T) {
	dir := t.TempDir()
	state, logs := filepath.Join(dir, "state"), filepath.Join(dir, "log")
	base := []string{"DMLAUNCH_DRY_RUN=1", "DMLAUNCH_DEBUG=gdb", "DMLAUNCH_LOG_DIR=" + logs}
	hvm := []string{"-xen-domid", "5", "-name", "web1", "-serial", "pty", "-machine", "xenfv"}
	port := freeBase(t, 5)
	r := launch(t, run{args: hvm, state: state, env: append(base, fmt.Sprintf("DMLAUNCH_GDB_LISTEN=127.0.0.1:%d", port))})
	require.Equal(t, 0, r.status, r.stderr)
	assert.False(t, r.started)
	qmp := filepath.Join(state, "5.qmp")
	for _, w := range []string{
		"mode:    gdb",
		fmt.Sprintf("gdb:     target remote 127.0.0.1:%d", port+5),
		"console: a new pty for the guest's first serial port; every byte kept in " + filepath.Join(logs, "dmlaunch-console-5.log"),
		"qmp:     " + qmp,
		"rewrite: serial-to-pty (",
		"rewrite: add-qmp-socket (",
		"argv:\n  " + os.Args[0] + "\n  -xen-domid\n  5\n  -name\n  web1\n  -serial\n  /dev/pts/N\n  -machine\n  xenfv\n  -chardev\n  socket,id=dmlaunch-qmp,path=" + qmp + ",server=on,wait=off\n  -mon\n  chardev=dmlaunch-qmp,mode=control\n",
	} {
		assert.Contains(t, r.stdout, w)
	}
	for _, p := range []string{state, logs} {
		_, err := os.Stat(p)
		assert.True(t, os.IsNotExist(err), "a dry run creates nothing: %s", p)
	}

	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+5))
	require.NoError(t, err)
	defer busy.Close()
	for _, tt := range []struct{ name, listen, want string }{
		{"port beyond 65535", "127.0.0.1:65533", "debug port 65533+5 is beyond 65535; lower the base port in DMLAUNCH_GDB_LISTEN"},
		{"port busy", fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("debug port 127.0.0.1:%d is already in use", port+5)},
		{"wide address", "0.0.0.0:1234", "is not a loopback address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dry := launch(t, run{args: hvm, state: state, env: append(base, "DMLAUNCH_GDB_LISTEN="+tt.listen)})
			real := launch(t, run{args: hvm, state: state, env: append(base[1:], "DMLAUNCH_GDB_LISTEN="+tt.listen)})
			assert.Equal(t, ExitBadInput, dry.status)
			assert.Equal(t, real.status, dry.status, "the dry run fails as the launch does")
			assert.False(t, real.started)
			assert.Contains(t, dry.stderr, tt.want)
			assert.Contains(t, real.stderr, tt.want)
			assert.Empty(t, dry.stdout)
		})
	}
}
