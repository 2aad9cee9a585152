package launcher

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A supervised launch records itself under the lease lock, before QEMU
// starts: a lease file lost or damaged while QEMU starts is rebuilt with
// its lease, and its domid is not handed to another launch. The launch
// is held in that window by a strace that does not attach until the test
// lets it go (fakeStrace, between "start QEMU" and "write record").
func TestLeaseRebuildKeepsASupervisedLaunchBeforeQEMURuns(t *testing.T) {
	for _, destroy := range []struct {
		name   string
		apply  func(path string) error
		logged string
	}{
		{"removed", os.Remove, "is missing; rebuilt from 1 registry records (1 of them live launches"},
		{"garbage", func(path string) error { return os.WriteFile(path, []byte("\x00garbage]]\n"), 0o600) },
			"is damaged"},
	} {
		t.Run(destroy.name, func(t *testing.T) {
			bin := t.TempDir()
			exe, err := os.Executable()
			require.NoError(t, err)
			require.NoError(t, os.Symlink(exe, filepath.Join(bin, "strace")))
			gate := filepath.Join(bin, "gate")
			require.NoError(t, syscall.Mkfifo(gate, 0o600))
			report := filepath.Join(bin, "qemu.json")
			s := startSupervised(t, exe, []string{
				"DMLAUNCH_DEBUG=strace", "XEN_DOMAIN_ID=", "PATH=" + bin + ":" + os.Getenv("PATH"),
				"FAKE_STRACE_GATE=" + gate, "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1",
			}, hvmNoDomid)
			opened := false
			letGo := func() {
				if !opened {
					opened = true
					if f, err := os.OpenFile(gate, os.O_WRONLY, 0); err == nil {
						f.Close()
					}
				}
			}
			t.Cleanup(letGo)
			require.Eventually(t, func() bool { _, err := os.Stat(gate + ".args"); return err == nil }, 30*time.Second, 5*time.Millisecond,
				"waiting for the launch's strace to start: %s", s.stderr)
			_, err = os.Stat(report)
			require.ErrorIs(t, err, os.ErrNotExist, "QEMU is held: it has not run yet")

			// In the window: the lease file goes, and another launch
			// allocates a domid.
			require.NoError(t, destroy.apply(filepath.Join(s.state, domid.LeaseFile)))
			other := startLive(t, s.state, hvmNoDomid...)
			require.True(t, other.running(), "the other launch runs: exit %d: %s", other.status, other.stderr.String())
			assert.Contains(t, other.stderr.String(), destroy.logged)

			// The held QEMU's domid, from its environment: QEMU's pid is
			// strace's -p.
			args, err := os.ReadFile(gate + ".args")
			require.NoError(t, err)
			words := strings.Split(string(args), "\n")
			require.Greater(t, len(words), 2)
			environ, err := os.ReadFile("/proc/" + words[len(words)-1] + "/environ")
			require.NoError(t, err)
			held := -1
			for _, kv := range strings.Split(string(environ), "\x00") {
				if v, ok := strings.CutPrefix(kv, "XEN_DOMAIN_ID="); ok {
					held, _ = strconv.Atoi(v)
				}
			}
			require.GreaterOrEqual(t, held, 0)
			assert.NotEqual(t, held, other.domid, "domid %d handed out twice", held)

			entries, err := inventory.List(s.state)
			require.NoError(t, err)
			var first *inventory.Entry
			for i, en := range entries {
				if en.Launcher.PID == s.cmd.Process.Pid {
					first = &entries[i]
				}
			}
			require.NotNil(t, first, "the supervised launch is recorded before QEMU starts: %+v", entries)
			assert.Equal(t, held, first.Domid)
			assert.True(t, first.Starting, "recorded without a QEMU pid, as starting")
			assert.Zero(t, first.QEMUPID)
			assert.Equal(t, "strace", first.Mode)
			assert.Equal(t, "leased", first.Name)

			// Let the launch go on: its record is completed with QEMU's pid.
			letGo()
			var rec inventory.Entry
			require.Eventually(t, func() bool {
				entries, _ := inventory.List(s.state)
				for _, en := range entries {
					if en.Launcher.PID == s.cmd.Process.Pid && en.QEMUPID != 0 {
						rec = en
						return true
					}
				}
				return false
			}, 30*time.Second, 5*time.Millisecond, "waiting for the completed record: %s", s.stderr)
			// The record names QEMU once it is started; the fake writes its
			// report a moment later, later still on a loaded machine.
			var fake FakeReport
			require.Eventually(t, func() bool { var ok bool; fake, ok = readReport(report); return ok }, 30*time.Second, 5*time.Millisecond,
				"QEMU runs once the record is complete")
			assert.Equal(t, fake.PID, rec.QEMUPID)
			assert.Equal(t, strconv.Itoa(rec.Domid), fake.Env["XEN_DOMAIN_ID"])
			assert.Equal(t, first.Domid, rec.Domid)
			assert.False(t, rec.Starting)
			assert.NotEmpty(t, rec.ConsolePTY)
			assert.Contains(t, s.stderr.String(), "strace did not attach")

			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			assert.Equal(t, 128+int(syscall.SIGTERM), s.wait(t, 30*time.Second))
			entries, err = inventory.List(s.state)
			require.NoError(t, err)
			for _, en := range entries {
				assert.NotEqual(t, rec.Domid, en.Domid, "the record goes with the launch")
			}
			assert.False(t, strings.Contains(s.stderr.String(), "registry record not completed"))
		})
	}
}
