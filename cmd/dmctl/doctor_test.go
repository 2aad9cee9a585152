package main

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/dmlaunch/dmlaunch/internal/registry"
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

// fakeCgroups lays out, under root, the /proc/self files and cgroup
// directories a machine would show: mounts are mountinfo lines (mount
// points inside root), cgroups the /proc/self/cgroup lines, dirs the
// cgroup directories to make, each with its control files.
func fakeCgroups(t *testing.T, root, osrelease string, mounts, cgroups []string, dirs map[string][]string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "proc/self"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "proc/sys/kernel"), 0o755))
	write := func(path string, lines []string) {
		text := ""
		for _, l := range lines {
			text += l + "\n"
		}
		require.NoError(t, os.WriteFile(filepath.Join(root, path), []byte(text), 0o644))
	}
	write("proc/self/mountinfo", mounts)
	write("proc/self/cgroup", cgroups)
	write("proc/sys/kernel/osrelease", []string{osrelease})
	for dir, files := range dirs {
		require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
		for _, f := range files {
			write(filepath.Join(dir, f), []string{"0"})
		}
	}
}

func TestDoctorFreezer(t *testing.T) {
	const (
		v2Mount = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw"
		v1Mount = "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer"
		hybrid  = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"
	)
	tests := []struct {
		name    string
		release string
		mounts  []string
		cgroups []string
		dirs    map[string][]string
		warning bool
		want    string
	}{
		{"v2, in a service's cgroup", "6.1.0", []string{v2Mount}, []string{"0::/system.slice/xen.service"},
			map[string][]string{"sys/fs/cgroup/system.slice/xen.service": {"cgroup.freeze", "cgroup.procs"}},
			false, "cgroup v2 freezer: gdb-wait and strace hold QEMU in a cgroup made in "},
		{"v2 root cgroup, a kernel with cgroup.freeze", "5.10.0", []string{hybrid, v1Mount}, []string{"6:freezer:/", "0::/"},
			map[string][]string{"sys/fs/cgroup/unified": {"cgroup.procs"}, "sys/fs/cgroup/freezer": {"tasks"}},
			false, "cgroup v2 freezer"},
		{"v2 root cgroup, a kernel without: the v1 freezer", "4.19.0", []string{hybrid, v1Mount}, []string{"6:freezer:/", "0::/"},
			map[string][]string{"sys/fs/cgroup/unified": {"cgroup.procs"}, "sys/fs/cgroup/freezer": {"tasks"}},
			false, "cgroup v1 freezer: gdb-wait and strace hold QEMU"},
		{"no freezer mounted", "6.1.0", []string{"31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw"}, []string{"4:memory:/x"}, nil,
			true, "no writable cgroup freezer (cgroup v2 freezer: no cgroup2 hierarchy is mounted; cgroup v1 freezer: no v1 freezer hierarchy is mounted): gdb-wait and strace hold QEMU in a job-control stop instead, and a debugger sees one SIGCONT"},
		{"v2 cgroup gone", "6.1.0", []string{v2Mount}, []string{"0::/system.slice/gone.service"}, nil,
			true, "is not writable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := installedRoot(t)
			fakeCgroups(t, root, tt.release, tt.mounts, tt.cgroups, tt.dirs)
			checks, _ := doctorChecks(t, root)
			c, ok := checks["freezer"]
			require.True(t, ok, "the freezer check ran")
			assert.True(t, c.OK, "a missing freezer has a fallback: it is a warning, not a failure")
			assert.Equal(t, tt.warning, c.Warning, c.Detail)
			assert.Contains(t, c.Detail, tt.want)
			if tt.warning {
				assert.Contains(t, c.Fix, "mount -t cgroup -o freezer")
				assert.Contains(t, c.Fix, "cgroup v2 with the toolstack's cgroup delegated")
			}
		})
	}
}

// What damage left in the state directory is reported with its fix, and
// doctor changes nothing there: not even the damaged lease file, which
// the next launch (or dmctl prune) repairs.
func TestDoctorStateDirectory(t *testing.T) {
	record := func(t *testing.T, state string, domid int, launcher func(*testing.T) proc.Identity, mode ...string) {
		m := "pass-through"
		if len(mode) > 0 {
			m = mode[0]
		}
		_, err := registry.Write(state, registry.Record{Domid: domid, Name: "r", Kind: "hvm", Mode: m,
			Launcher: launcher(t), QEMUPID: 1, Started: time.Now()})
		require.NoError(t, err)
	}
	tests := []struct {
		name    string
		damage  func(t *testing.T, state string)
		check   string
		ok      bool
		warning bool
		want    []string
		fix     string
	}{
		{"clean", func(t *testing.T, state string) { record(t, state, 3, liveProcess) },
			"registry", true, false, []string{"1 records of running launches"}, ""},
		{"lease file kept aside", func(t *testing.T, state string) {
			require.NoError(t, os.WriteFile(filepath.Join(state, "domids.damaged.20261202T150405.000000000Z"), []byte("junk"), 0o600))
		}, "lease file", true, true, []string{"1 damaged lease files kept aside", "domids.damaged.20261202T150405.000000000Z"}, "rm "},
		{"lease file damaged now", func(t *testing.T, state string) {
			require.NoError(t, os.WriteFile(filepath.Join(state, "domids"), []byte("\x00garbage]]\n"), 0o600))
		}, "lease file", true, true, []string{"is damaged", "the next launch repairs it"}, "dmctl prune"},
		{"stale record", func(t *testing.T, state string) {
			record(t, state, 3, liveProcess)
			record(t, state, 7, deadProcess, "gdb")
		}, "registry", true, true, []string{"1 records of running launches", "1 stale records", "domains 7"}, "dmctl prune"},
		// A pass-through launch's QEMU exits at every xl destroy: its
		// record is not damage, and no warning.
		{"ended records", func(t *testing.T, state string) {
			record(t, state, 3, liveProcess)
			record(t, state, 7, deadProcess)
			record(t, state, 8, deadProcess)
		}, "registry", true, false, []string{"1 records of running launches, 2 of ended pass-through launches"}, ""},
		// A daemonized QEMU whose pidfile is not trusted may still run:
		// its record is kept, with a warning that says why.
		{"unknown record", func(t *testing.T, state string) {
			record(t, state, 3, liveProcess)
			pidFile := filepath.Join(t.TempDir(), "qemu-dom0.pid")
			require.NoError(t, os.Symlink("/dev/watchdog", pidFile))
			_, err := registry.Write(state, registry.Record{Domid: 0, Name: "dom0", Kind: "qdisk", Mode: "pass-through",
				Launcher: deadProcess(t), QEMUPID: 1, Started: time.Now(), PIDFile: pidFile,
				Argv: []string{"/usr/libexec/xen-qemu-system-i386", "-xen-domid", "0", "-daemonize", "-pidfile", pidFile}})
			require.NoError(t, err)
		}, "registry", true, true, []string{"1 records of running launches", "1 records of daemonized QEMUs that can be neither followed nor proved gone",
			"domain 0: pidfile ", "is a symbolic link; not followed"}, "remove the record by hand"},
		{"unreadable records", func(t *testing.T, state string) {
			record(t, state, 7, deadProcess, "gdb")
			require.NoError(t, os.WriteFile(filepath.Join(state, "3.json"), []byte(`{"domid":3,"na`), 0o600))
			require.NoError(t, os.Symlink("/dev/zero", filepath.Join(state, "4.json")))
		}, "registry", false, false, []string{"2 records cannot be read", "3.json is damaged", "4.json is a symbolic link", "1 stale records"}, "dmctl prune --bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := installedRoot(t)
			state := filepath.Join(root, "run/dmlaunch")
			require.NoError(t, os.MkdirAll(state, 0o700))
			tt.damage(t, state)
			before := lsnapshot(t, state)
			checks, status := doctorChecks(t, root)
			assert.Equal(t, before, lsnapshot(t, state), "doctor changes nothing in the state directory")
			c, ok := checks[tt.check]
			require.True(t, ok, "check %q ran", tt.check)
			assert.Equal(t, tt.ok, c.OK, c.Detail)
			assert.Equal(t, tt.warning, c.Warning, c.Detail)
			for _, w := range tt.want {
				assert.Contains(t, c.Detail, w)
			}
			assert.Contains(t, c.Fix, tt.fix)
			if !tt.ok {
				assert.Equal(t, exitFailure, status)
			}
		})
	}
}

// lsnapshot is snapshot without following symbolic links (one may point
// at /dev/zero): a link is its target.
func lsnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(path)
		require.NoError(t, err)
		content := ""
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			content, _ = os.Readlink(path)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(path)
			content = string(b)
		}
		out[e.Name()] = fi.Mode().String() + " " + fi.ModTime().String() + " " + content
	}
	return out
}
