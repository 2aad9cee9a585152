package main

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// installedRoot installs dmlaunch with scripts/install.sh into a
// throwaway root holding a stand-in for the real QEMU.
func installedRoot(t *testing.T) string {
	root := t.TempDir()
	real := make([]byte, 4096)
	_, _ = rand.Read(real)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/libexec"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "usr/libexec/xen-qemu-system-i386"), real, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "var/log/xen"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "run"), 0o755))
	cmd := exec.Command("../../scripts/install.sh", "--dmlaunch", dmlaunchBin, "--dmctl", dmctlBin)
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return root
}

func doctorChecks(t *testing.T, root string) (map[string]Check, int) {
	t.Helper()
	cmd := exec.Command(dmctlBin, "doctor", "--json", "--root", root)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	status := 0
	if exit, ok := err.(*exec.ExitError); ok {
		status = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	var checks []Check
	require.NoError(t, json.Unmarshal(out, &checks), "%s", out)
	m := map[string]Check{}
	for _, c := range checks {
		m[c.Name] = c
	}
	return m, status
}

func TestDoctorOnAGoodInstallation(t *testing.T) {
	realtest.Need(t, "gdbserver", "gdb")
	root := installedRoot(t)
	checks, status := doctorChecks(t, root)
	for name, c := range checks {
		assert.True(t, c.OK, "%s: %s", name, c.Detail)
	}
	assert.Equal(t, 0, status)
	assert.Contains(t, checks["real QEMU"].Detail, "xen-qemu-system-i386.distrib")
	assert.Contains(t, checks["device model"].Detail, "is dmlaunch")
}

func TestDoctorOnABrokenInstallation(t *testing.T) {
	tests := []struct {
		name   string
		damage func(root string)
		check  string
		want   string
	}{
		{"not installed", func(root string) {
			require.NoError(t, os.Rename(filepath.Join(root, "usr/libexec/xen-qemu-system-i386.distrib"), filepath.Join(root, "usr/libexec/xen-qemu-system-i386")))
		}, "device model", "is not dmlaunch"},
		{"real QEMU gone", func(root string) {
			require.NoError(t, os.Remove(filepath.Join(root, "usr/libexec/xen-qemu-system-i386.distrib")))
		}, "real QEMU", "no real QEMU found"},
		{"real QEMU is dmlaunch", func(root string) {
			b, _ := os.ReadFile(dmlaunchBin)
			require.NoError(t, os.WriteFile(filepath.Join(root, "usr/libexec/xen-qemu-system-i386.distrib"), b, 0o755))
		}, "real QEMU", "is a copy of dmlaunch"},
		{"bad setting", func(root string) {
			require.NoError(t, os.WriteFile(filepath.Join(root, "etc/dmlaunch/dmlaunch.conf"), []byte("DMLAUNCH_DEBUG=always\n"), 0o644))
		}, "settings", "unknown mode"},
		{"no log directory", func(root string) {
			require.NoError(t, os.RemoveAll(filepath.Join(root, "var/log/xen")))
		}, "log directory", "no such file"},
		{"loose state directory", func(root string) {
			require.NoError(t, os.MkdirAll(filepath.Join(root, "run/dmlaunch"), 0o700))
			require.NoError(t, os.Chmod(filepath.Join(root, "run/dmlaunch"), 0o777))
		}, "state directory", "writable by others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := installedRoot(t)
			tt.damage(root)
			checks, status := doctorChecks(t, root)
			assert.Equal(t, exitFailure, status)
			c, ok := checks[tt.check]
			require.True(t, ok, "check %q ran", tt.check)
			assert.False(t, c.OK, "%s should fail", tt.check)
			assert.Contains(t, c.Detail, tt.want)
			assert.NotEmpty(t, c.Fix, "a failing check says how to fix it")
		})
	}
}
