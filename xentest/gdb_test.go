//go:build xenlab

package xentest

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gdbConfig is dom0's settings file for a debug mode that the outer machine
// reaches: the lab forwards its loopback ports to dom0's debug ports, and
// those connections arrive from the user-mode network's gateway.
func gdbConfig(mode string, extra ...string) []string {
	return append([]string{
		"DMLAUNCH_DEBUG=" + mode,
		"DMLAUNCH_GDB_LISTEN=0.0.0.0:1234",
		"DMLAUNCH_GDB_ALLOW=10.0.2.2/32",
	}, extra...)
}

// gdbAddr is where the outer machine reaches dom0's debug port for domid.
func gdbAddr(t testing.TB, domid int) string {
	t.Helper()
	out, err := exec.Command(xenlab(), "gdb-addr", fmt.Sprint(domid)).CombinedOutput()
	require.NoError(t, err, "scripts/xenlab gdb-addr %d: %s", domid, out)
	return strings.TrimSpace(string(out))
}

// outerGDB runs Debian's gdb on this machine against addr with the given
// commands and returns what it printed.
func outerGDB(t testing.TB, addr string, timeout time.Duration, cmds ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The QEMU binary and its libraries are dom0's: gdb need not read them
	// (over TCG that is slow), it needs the threads and registers.
	args := []string{"-batch", "-nx",
		"-ex", "set sysroot /nonexistent", "-ex", "set auto-solib-add off",
		"-ex", "set tcp connect-timeout 60",
		// gdbserver starts when gdb first speaks, in a dom0 under TCG: the
		// default 2 s for a reply is too short on a loaded machine.
		"-ex", "set remotetimeout 120",
		"-ex", "target remote " + addr}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	out, err := exec.CommandContext(ctx, "gdb", args...).CombinedOutput()
	return string(out), err
}

var threadLine = regexp.MustCompile(`(?m)^[ *]+\d+\s+Thread `)

// gdb mode under libxl: xl create returns within libxl's wait, a gdb on the
// outer machine attaches through the lab's forward, sees QEMU's threads and
// detaches; the guest runs on and its console is published; xl destroy takes
// the launcher, gdbserver and QEMU down.
func TestGDBAttachFromOuterMachine(t *testing.T) {
	const name, msg = "hvm-gdb", "hvm-gdb: hello while debuggable"
	setConfig(t, gdbConfig("gdb")...)
	disk := bootDisk(t, name, msg)
	// xl create returning 0 is libxl's word that QEMU said "running" within
	// its wait. The guest's line comes through libxl's published console:
	// the pty dmlaunch's relay offers, with every byte kept in the console
	// log.
	d := create(t, name, hvmConfig(name, disk), msg)

	log := run(t, "cat /var/log/xen/qemu-dm-"+name+".log")
	assert.Contains(t, log, fmt.Sprintf("dmlaunch: domain %d (%s): hvm, domid from -xen-domid, debug gdb;", d.domid, name))
	consoleLog := regexp.MustCompile(`console log (\S+);`).FindStringSubmatch(log)
	require.NotNil(t, consoleLog, "no console log named in the launch line:\n%s", log)
	pid := xenstoreRead(t, fmt.Sprintf("/local/domain/%d/image/device-model-pid", d.domid))
	assert.Equal(t, "/usr/libexec/xen-qemu-system-i386", strings.TrimSpace(run(t, "readlink /proc/"+pid+"/exe")),
		"the pid libxl recorded is the launcher, which supervises QEMU")

	assert.Contains(t, run(t, "cat "+consoleLog[1]), msg, "the console log kept the guest's line")

	out, err := outerGDB(t, gdbAddr(t, d.domid), 3*time.Minute, "info threads", "detach")
	require.NoError(t, err, "outer gdb:\n%s", out)
	threads := threadLine.FindAllString(out, -1)
	assert.GreaterOrEqual(t, len(threads), 2, "QEMU's threads as gdb saw them:\n%s", out)
	assert.Contains(t, out, "detached]")

	// The guest runs on, its QEMU untraced; dmctl sees it and its console.
	qemu := strings.TrimSpace(run(t, fmt.Sprintf("pgrep -f -- '^%s .*-xen-domid %d ' | head -n1", realQEMU, d.domid)))
	require.NotEmpty(t, qemu, "QEMU for domid %d", d.domid)
	assert.Equal(t, "0", strings.TrimSpace(run(t, "awk '/^TracerPid/{print $2}' /proc/"+qemu+"/status")), "QEMU is untraced after the detach")
	state := run(t, "xl list "+name)
	assert.NotRegexp(t, `\s[-rb]+p[-]*\s`, state, "the guest is not paused after the detach:\n%s", state)
	assert.Contains(t, run(t, "dmctl list"), name)
	dmctlConsoleShows(t, d, msg)

	d.destroy(t)
	assert.Empty(t, strings.TrimSpace(run(t, "pgrep -a gdbserver || true")), "gdbserver after xl destroy")
	assert.Equal(t, "gone", strings.TrimSpace(run(t, "kill -0 "+pid+" 2>/dev/null && echo alive || echo gone")), "the launcher after xl destroy")
	assert.Equal(t, "none", strings.TrimSpace(run(t, fmt.Sprintf("ls /run/dmlaunch/%d.json 2>/dev/null || echo none", d.domid))),
		"the launcher removes its record when it ends")
	noLiveRecord(t, d)
}

// dmctlConsoleShows runs "dmctl console" in dom0 (on a pty: it puts its
// terminal in raw mode) in place of the xl console create attached, and
// waits for want.
func dmctlConsoleShows(t testing.TB, d *domain, want string) {
	t.Helper()
	run(t, fmt.Sprintf(`
pkill -F /tmp/console-%[1]s.pid 2>/dev/null
fifo=$(mktemp -u); mkfifo "$fifo"; out=$(mktemp)
setsid script -qfc "dmctl console %[2]d" /dev/null <>"$fifo" >"$out" 2>&1 & pid=$!
rm -f "$fifo"
end=$((SECONDS + 120))
until grep -qF -- %[3]q "$out"; do
	if [ $SECONDS -ge $end ] || ! kill -0 $pid 2>/dev/null; then kill $pid 2>/dev/null; cat "$out"; echo "xentest: no %[3]q from dmctl console"; exit 1; fi
	sleep 0.2
done
kill $pid; cat "$out"`, d.name, d.domid, want))
}
