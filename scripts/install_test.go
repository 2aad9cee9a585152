package scripts_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const debianDM = "/usr/libexec/xen-qemu-system-i386"

func build(t *testing.T) (dmlaunch, dmctl string) {
	dir := t.TempDir()
	for _, c := range []string{"dmlaunch", "dmctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	return filepath.Join(dir, "dmlaunch"), filepath.Join(dir, "dmctl")
}

func script(t *testing.T, root, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command("./"+name, args...)
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", name, args, out)
	return string(out)
}

// fakeRoot makes a throwaway root holding a "real QEMU" of random bytes;
// with dpkg it also gets a dpkg database in which qemu-system-xen owns it.
func fakeRoot(t *testing.T, withDpkg bool) (root string, original []byte) {
	root = t.TempDir()
	original = make([]byte, 4096)
	_, _ = rand.Read(original)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/libexec"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, debianDM), original, 0o755))
	if withDpkg {
		db := filepath.Join(root, "var/lib/dpkg")
		require.NoError(t, os.MkdirAll(filepath.Join(db, "info"), 0o755))
		require.NoError(t, os.MkdirAll(filepath.Join(db, "updates"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(db, "diversions"), nil, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(db, "status"), []byte(
			"Package: qemu-system-xen\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:7.2\nMaintainer: x\nDescription: x\n\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(db, "info/qemu-system-xen.list"), []byte(debianDM+"\n"), 0o644))
	}
	return root, original
}

func snapshot(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	require.NoError(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("%s sha256:%x", fi.Mode(), sha256.Sum256(b))
		} else {
			out[rel] = fi.Mode().String()
		}
		return nil
	}))
	return out
}

func TestInstallUninstall(t *testing.T) {
	for _, withDpkg := range []bool{false, true} {
		name := "rename"
		if withDpkg {
			name = "dpkg-divert"
			realtest.Need(t, "dpkg-divert", "dpkg-query")
		}
		t.Run(name, func(t *testing.T) {
			dmlaunch, dmctl := build(t)
			root, original := fakeRoot(t, withDpkg)
			before := snapshot(t, root)

			out := script(t, root, "install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
			if withDpkg {
				assert.Contains(t, out, "dpkg-divert --local")
				div, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/diversions"))
				require.NoError(t, err)
				assert.Equal(t, debianDM+"\n"+debianDM+".distrib\n:\n", string(div))
			}
			installed, err := os.ReadFile(filepath.Join(root, debianDM))
			require.NoError(t, err)
			want, _ := os.ReadFile(dmlaunch)
			assert.True(t, bytes.Equal(want, installed), "dmlaunch is at the device-model path")
			moved, err := os.ReadFile(filepath.Join(root, debianDM+".distrib"))
			require.NoError(t, err)
			assert.Equal(t, original, moved, "the real QEMU is at <path>.distrib")
			assert.FileExists(t, filepath.Join(root, "usr/sbin/dmctl"))
			assert.FileExists(t, filepath.Join(root, "etc/dmlaunch/dmlaunch.conf"))
			snippet, err := os.ReadFile(filepath.Join(root, "etc/logrotate.d/dmlaunch"))
			require.NoError(t, err)
			assert.Contains(t, string(snippet), "/var/log/xen/dmlaunch-console-*.log {", "the logrotate snippet is installed")
			if lr, err := exec.LookPath(realtest.Logrotate); err == nil {
				// logrotate reads it without complaint (-d: a dry run).
				out, err := exec.Command(lr, "-d", "-s", filepath.Join(t.TempDir(), "status"), filepath.Join(root, "etc/logrotate.d/dmlaunch")).CombinedOutput()
				require.NoError(t, err, "%s", out)
				assert.NotContains(t, string(out), "error")
			} else if os.Getenv("CI") == "true" {
				t.Fatal("logrotate is not installed (run scripts/deps.sh)")
			}

			// The installed dmlaunch finds the real QEMU beside itself.
			cmd := exec.Command(filepath.Join(root, debianDM), "-xen-domid", "3", "-machine", "xenfv")
			cmd.Env = []string{"DMLAUNCH_DRY_RUN=1", "DMLAUNCH_CONFIG=" + filepath.Join(root, "etc/dmlaunch/dmlaunch.conf")}
			dry, err := cmd.Output()
			require.NoError(t, err)
			assert.Contains(t, string(dry), "qemu:    "+filepath.Join(root, debianDM)+".distrib\n")

			// Again: nothing changes, the real QEMU is not overwritten.
			afterFirst := snapshot(t, root)
			script(t, root, "install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
			assert.Equal(t, afterFirst, snapshot(t, root), "install is idempotent")

			out = script(t, root, "uninstall.sh")
			assert.Contains(t, out, "done")
			after := snapshot(t, root)
			delete(after, "var/lib/dpkg/diversions-old") // dpkg's own backup
			if withDpkg {
				assert.Equal(t, before["var/lib/dpkg/diversions"], after["var/lib/dpkg/diversions"])
			}
			assert.Equal(t, before, after, "uninstall restores the tree exactly")

			out = script(t, root, "uninstall.sh")
			assert.Contains(t, out, "nothing to do", "uninstall is idempotent")
		})
	}
}

func TestInstallRefusals(t *testing.T) {
	dmlaunch, dmctl := build(t)
	empty := t.TempDir()
	cmd := exec.Command("./install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
	cmd.Env = append(os.Environ(), "DESTDIR="+empty)
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "no device model found")

	root, _ := fakeRoot(t, false)
	require.NoError(t, os.WriteFile(filepath.Join(root, debianDM+".distrib"), []byte("stray"), 0o755))
	cmd = exec.Command("./install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), ".distrib exists but dmlaunch has no install record")
	b, _ := os.ReadFile(filepath.Join(root, debianDM+".distrib"))
	assert.Equal(t, "stray", string(b), "nothing was overwritten")

	cmd = exec.Command("./install.sh", "--frobnicate")
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.True(t, strings.Contains(string(out), "unknown argument"))
}

func TestInstallAndUninstallKeepAChangedLogrotateSnippet(t *testing.T) {
	dmlaunch, dmctl := build(t)
	root, _ := fakeRoot(t, false)
	script(t, root, "install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
	snippet := filepath.Join(root, "etc/logrotate.d/dmlaunch")
	changed := []byte("/var/log/xen/dmlaunch-console-*.log {\n\tdaily\n}\n")
	require.NoError(t, os.WriteFile(snippet, changed, 0o644))
	out := script(t, root, "install.sh", "--dmlaunch", dmlaunch, "--dmctl", dmctl)
	assert.Contains(t, out, "kept /etc/logrotate.d/dmlaunch: it was changed")
	out = script(t, root, "uninstall.sh")
	assert.Contains(t, out, "kept "+snippet+": it was changed")
	b, err := os.ReadFile(snippet)
	require.NoError(t, err)
	assert.Equal(t, changed, b, "the operator's rotation is left alone")
}
