package launcher

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/dmlaunch/dmlaunch/internal/toolstack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realRun runs dmlaunch in front of a real QEMU, logging the exact command
// line when anything fails.
func realRun(t *testing.T, qemu string, args []string, extra []*os.File, timeout time.Duration, env ...string) (stdout, stderr string, status int) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(dmlaunchBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_STATE_DIR=" + state, "DMLAUNCH_QEMU=" + qemu}, env...)
	cmd.ExtraFiles = extra
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("dmlaunch %q did not finish in %v\nstderr: %s", args, timeout, errb.String())
	}
	status = 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitCode()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("command: %s %q\nexit %d\nstdout: %s\nstderr: %s", dmlaunchBin, args, status, out.String(), errb.String())
		}
	})
	return out.String(), errb.String(), status
}

func TestDemoGuestBootsThroughDmlaunch(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	const msg = "dmlaunch demo guest says hello"
	img, err := guest.BootSector(guest.Options{Message: msg + "\r\n", Exit: true, ExitStatus: 3})
	require.NoError(t, err)
	disk := filepath.Join(t.TempDir(), "boot.img")
	require.NoError(t, os.WriteFile(disk, img, 0o644))

	args := append([]string{"-name", "demo guest", "-machine", "pc", "-accel", "tcg", "-display", "none",
		"-nodefaults", "-no-user-config", "-serial", "stdio", "-drive", "file=" + disk + ",format=raw,if=floppy"},
		guest.QEMUArgs()...)
	stdout, stderr, status := realRun(t, qemu, args, nil, 60*time.Second)
	assert.Contains(t, stdout, msg, "the guest's line arrives on COM1")
	assert.Equal(t, guest.ExitStatus(3), status, "QEMU's own exit status, set by the guest")
	assert.Contains(t, stderr, "dmlaunch: domain 1 (demo guest): unknown, domid from lease, pass-through: "+qemu)
}

// TestToolstackShapesAcceptedByXenQEMU runs the argv dmlaunch execs for
// each libxl invocation through the Xen build of QEMU. Without a
// hypervisor it checks the whole command line (options, values, chardevs,
// pre-opened fds, drives, machine properties) before it fails to reach
// Xen; any other failure is a command line QEMU would refuse.
func TestToolstackShapesAcceptedByXenQEMU(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUXen)[0]
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk,with,commas.img")
	iso := filepath.Join(dir, "install cd.iso")
	for _, f := range []string{disk, iso} {
		require.NoError(t, os.WriteFile(f, make([]byte, 1<<20), 0o644))
	}
	for _, inv := range toolstack.Invocations {
		t.Run(inv.Name, func(t *testing.T) {
			var extra []*os.File
			if inv.NeedsFD() {
				// The toolstack's pre-opened QMP socket, at fd 3.
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "qmp"), Net: "unix"})
				require.NoError(t, err)
				defer l.Close()
				f, err := l.File()
				require.NoError(t, err)
				defer f.Close()
				extra = []*os.File{f}
			}
			args := inv.Expand("3", dir, strings.ReplaceAll(disk, ",", ",,"), iso)
			_, stderr, status := realRun(t, qemu, args, extra, 30*time.Second)
			assert.Equal(t, 1, status)
			assert.Contains(t, stderr, "failed to initialize xen")
			prefix := filepath.Base(qemu) + ": "
			for _, line := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(line, prefix) {
					assert.Equal(t, prefix+"failed to initialize xen: Operation not permitted", line, "QEMU refused the command line")
				}
			}
			assert.Contains(t, stderr, "dmlaunch: ", "the launch was logged")
			assert.Contains(t, stderr, ": "+inv.Kind+", ")
		})
	}
}

// With the settings file damaged (/dev/zero), the real Xen QEMU still
// answers queries and gets the toolstack's probe and disk backends, while
// guests' launches are refused before QEMU runs.
func TestDamagedSettingsStopOnlyGuestsBeforeXenQEMU(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUXen)[0]
	damaged := "DMLAUNCH_CONFIG=/dev/zero"
	stdout, stderr, status := realRun(t, qemu, []string{"-version"}, nil, 30*time.Second, damaged)
	assert.Equal(t, 0, status)
	assert.Contains(t, stdout, "QEMU emulator version")
	assert.Contains(t, stderr, "dmlaunch: query: a query always passes through; settings ignored: DMLAUNCH_CONFIG=\"/dev/zero\"")

	stdout, _, status = realRun(t, qemu, []string{"-machine", "help"}, nil, 30*time.Second, damaged)
	assert.Equal(t, 0, status)
	assert.Contains(t, stdout, "xenpv")

	for _, inv := range toolstack.Invocations {
		t.Run(inv.Name, func(t *testing.T) {
			var extra []*os.File
			if inv.NeedsFD() {
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "qmp"), Net: "unix"})
				require.NoError(t, err)
				defer l.Close()
				f, err := l.File()
				require.NoError(t, err)
				defer f.Close()
				extra = []*os.File{f}
			}
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.img")
			require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o644))
			_, stderr, status := realRun(t, qemu, inv.Expand("3", dir, disk, disk), extra, 30*time.Second, damaged)
			if inv.Kind == "probe" || inv.Kind == "qdisk" {
				assert.Equal(t, 1, status, "QEMU's own status")
				assert.Contains(t, stderr, "failed to initialize xen", "QEMU ran")
				assert.Equal(t, 1, strings.Count(stderr, "settings ignored: "))
				return
			}
			assert.Equal(t, ExitBadInput, status)
			assert.NotContains(t, stderr, "failed to initialize xen", "QEMU never ran")
			assert.Contains(t, stderr, `DMLAUNCH_CONFIG="/dev/zero" (environment) is not a regular file`)
		})
	}
}
