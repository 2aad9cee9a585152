package launcher

import (
	"os"
	"path/filepath"
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
