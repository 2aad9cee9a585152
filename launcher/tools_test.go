package launcher

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestToolCommandLines(t *testing.T) {
	qemu := []string{"/usr/libexec/qemu-system-i386", "-name", "a b"}
	assert.Equal(t, []string{"/usr/bin/valgrind", "--tool=memcheck", "--fair-sched=try", "--log-file=/l/m.log", "--vgdb=yes", "--vgdb-prefix=/run/dmlaunch/vgdb-5",
		"/usr/libexec/qemu-system-i386", "-name", "a b"}, MemcheckArgs("/usr/bin/valgrind", "/l/m.log", "/run/dmlaunch/vgdb-5", -1, qemu))
	assert.Contains(t, MemcheckArgs("valgrind", "l", "p", 0, qemu), "--vgdb-error=0")
	assert.Contains(t, MemcheckArgs("valgrind", "l", "p", 3, qemu), "--vgdb-error=3")
	assert.Equal(t, []string{"strace", "-f", "-tt", "-o", "/l/s.log", "-p", "42"}, StraceArgs("strace", "/l/s.log", 42))
	assert.Equal(t, []string{"vgdb", "--pid=42", "--vgdb-prefix=/run/dmlaunch/vgdb-5"}, VgdbArgs("vgdb", "/run/dmlaunch/vgdb-5", 42))
	assert.Equal(t, "/var/log/xen/dmlaunch-strace-5-20261202T150405Z.log",
		ToolLogPath("/var/log/xen", "strace", 5, time.Date(2026, 12, 2, 15, 4, 5, 0, time.UTC)))
}

func TestVgdbErrorSetting(t *testing.T) {
	cfg, err := load(t, "")
	require.NoError(t, err)
	assert.Equal(t, -1, cfg.VgdbError, "unset: valgrind's default, never stop")
	cfg, err = load(t, "", "DMLAUNCH_VGDB_ERROR=1")
	require.NoError(t, err)
	assert.Equal(t, 1, cfg.VgdbError)
	for _, bad := range []string{"-1", "many"} {
		_, err = load(t, "", "DMLAUNCH_VGDB_ERROR="+bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "must be a count of errors")
	}
}

func TestMissingToolRefusesTheLaunch(t *testing.T) {
	r := launch(t, run{args: []string{"-xen-domid", "5", "-machine", "xenfv"}, env: []string{"DMLAUNCH_DEBUG=strace", "PATH=/nonexistent"}})
	assert.Equal(t, ExitBadInput, r.status)
	assert.False(t, r.started)
	assert.Contains(t, r.stderr, "DMLAUNCH_DEBUG=strace needs strace, which is not installed; apt-get install strace")
}
