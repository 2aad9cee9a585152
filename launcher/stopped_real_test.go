package launcher

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A QEMU left in a job-control stop (as a gdbserver killed mid-attach
// leaves it) still ends cleanly on the toolstack's SIGHUP, within the grace
// period rather than by SIGKILL.
func TestStoppedQEMUStopsOnSIGHUP(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	disk := bootImage(t, guest.Options{Message: "stopped guest\r\n"})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=console"}, guestArgs("stopped", disk))
	rec := s.record(t)
	// QEMU is up, its signal handlers in place, once the guest runs.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(rec.ConsoleLog)
		return strings.Contains(string(b), "stopped guest")
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGSTOP))
	require.Eventually(t, func() bool { _, state := procStatus(t, rec.QEMUPID); return state == 'T' }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	assert.Equal(t, 0, s.wait(t, GracePeriod+20*time.Second), "QEMU's own clean exit, not 128+SIGKILL")
	assert.NotContains(t, s.stderr.String(), "SIGKILL sent")
}
