//go:build xenlab

package xentest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realQEMU is where scripts/install.sh moved Debian's device model.
const realQEMU = "/usr/libexec/xen-qemu-system-i386.distrib"

// An HVM guest in pass-through: libxl execs dmlaunch, dmlaunch execs the real
// QEMU in place, and everything libxl does afterwards (the pid it records and
// later kills, the console it publishes) reaches the real QEMU.
func TestHVMPassThrough(t *testing.T) {
	const name, msg = "hvm-pass", "hvm-pass: hello from COM1"
	d := create(t, name, hvmConfig(name, bootDisk(t, name, msg)), msg)

	log := run(t, "cat /var/log/xen/qemu-dm-"+name+".log")
	want := fmt.Sprintf("dmlaunch: domain %d (%s): hvm, domid from -xen-domid, pass-through: %s -xen-domid %d ", d.domid, name, realQEMU, d.domid)
	assert.Contains(t, log, want, "the launch line in qemu-dm-%s.log", name)
	recordArgv(t, "hvm", log)

	pid := xenstoreRead(t, fmt.Sprintf("/local/domain/%d/image/device-model-pid", d.domid))
	exe := strings.TrimSpace(run(t, "readlink /proc/"+pid+"/exe"))
	assert.Equal(t, realQEMU, exe, "the pid libxl recorded (%s) is the real QEMU: dmlaunch exec'd in place", pid)

	d.destroy(t)
	assert.Equal(t, "gone", strings.TrimSpace(run(t, "kill -0 "+pid+" 2>/dev/null && echo alive || echo gone")), "QEMU pid %s after xl destroy", pid)
	noLiveRecord(t, d)
}

// noLiveRecord checks that dmctl shows no launch of the domain as live.
// A pass-through launch has exec'd QEMU: no dmlaunch process is left to
// remove its record when QEMU exits, so the record may stay, as an ended
// launch that "dmctl list" leaves out and "dmctl list --all" marks ended,
// until a later launch or "dmctl prune" removes it.
func noLiveRecord(t *testing.T, d *domain) {
	t.Helper()
	for _, line := range strings.Split(run(t, "dmctl list"), "\n") {
		f := strings.Fields(line)
		assert.False(t, len(f) > 1 && f[0] == fmt.Sprint(d.domid), "dmctl list after xl destroy shows domain %d: %s", d.domid, line)
	}
	for _, line := range strings.Split(run(t, "dmctl list --all"), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == fmt.Sprint(d.domid) {
			assert.Equal(t, "ended", f[len(f)-1], "dmctl list --all after xl destroy: %s", line)
		}
	}
}

// recordArgv keeps the argv libxl really passed (from dmlaunch's log line) in
// the test log, for argv's corpus.
func recordArgv(t *testing.T, shape, log string) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "dmlaunch: ") {
			t.Logf("libxl argv (%s): %s", shape, line)
			return
		}
	}
	require.Fail(t, "no dmlaunch line in the log", "%s", log)
}
