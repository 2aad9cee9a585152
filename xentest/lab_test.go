//go:build xenlab

package xentest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dmlaunch/dmlaunch/internal/guest"
)

// Timeouts are generous: the lab is Xen under TCG on a 2-core machine that
// others load too (dom0 took 236 s to come up at load 9).
const (
	cmdTimeout     = 5 * time.Minute
	consoleTimeout = 3 * time.Minute
	// libxlWait is libxl's compile-time wait for QEMU's "running".
	libxlWait = 60 * time.Second
)

var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}()

func xenlab() string { return filepath.Join(root, "scripts", "xenlab") }

// labDir is where the tests keep their guests' files in dom0.
const labDir = "/root/xentest"

func TestMain(m *testing.M) {
	out, err := exec.Command(xenlab(), "run", "xl", "list").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "xentest: the lab is not up (scripts/xenlab run xl list: %v)\n%s\nStart it with: scripts/xenlab up (make xen-test does)\n", err, out)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// run runs a shell command line in dom0 and returns its output; a non-zero
// status fails the test with everything it printed.
func run(t testing.TB, script string) string {
	t.Helper()
	out, err := try(script)
	require.NoError(t, err, "in dom0: %s\n%s", script, out)
	return out
}

// try runs a shell command line in dom0 and returns what it wrote to its
// standard output; its standard error goes into the error, if any.
func try(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, xenlab(), "run", "bash", "-c", script)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w; standard error:\n%s", err, stderr.String())
	}
	return stdout.String(), nil
}

// put writes data to a file in dom0.
func put(t testing.TB, data []byte, remote string) {
	t.Helper()
	local := filepath.Join(t.TempDir(), filepath.Base(remote))
	require.NoError(t, os.WriteFile(local, data, 0o644))
	out, err := exec.Command(xenlab(), "put", local, remote).CombinedOutput()
	require.NoError(t, err, "scripts/xenlab put %s: %s", remote, out)
}

var dirMade bool

// bootDisk puts a guest disk into dom0 whose boot sector writes msg to COM1
// and halts; it returns the disk's path in dom0.
func bootDisk(t testing.TB, name, msg string) string {
	t.Helper()
	if !dirMade {
		run(t, "mkdir -p "+labDir)
		dirMade = true
	}
	sector, err := guest.BootSector(guest.Options{Message: msg + "\r\n", Park: true})
	require.NoError(t, err)
	disk := make([]byte, 1<<20)
	copy(disk, sector)
	path := labDir + "/" + name + ".img"
	put(t, disk, path)
	return path
}

// hvmConfig is an xl.cfg for the boot-sector guest, as a user would write it.
func hvmConfig(name, disk string, extra ...string) string {
	lines := []string{
		fmt.Sprintf("name = %q", name),
		`type = "hvm"`,
		`device_model_version = "qemu-xen"`,
		"memory = 32",
		"vcpus = 1",
		`serial = "pty"`,
		`boot = "c"`,
		"vnc = 0",
		// No emulated VGA: under Xen in TCG, SeaBIOS's VGA option ROM can
		// hang the whole lab (docs/xenlab.md, Limits).
		`vga = "none"`,
		`on_crash = "destroy"`,
		// A guest that triple-faults is rebooted by default, as a new
		// domain: create would wait on the old one's console.
		`on_reboot = "destroy"`,
		fmt.Sprintf(`disk = [ "format=raw,vdev=hda,access=rw,backendtype=qdisk,target=%s" ]`, disk),
	}
	return strings.Join(append(lines, extra...), "\n") + "\n"
}

// domain is a guest the test created; its cleanup destroys it if the test
// did not.
type domain struct {
	name  string
	domid int
}

// create writes cfg to dom0, creates the domain with env (KEY=VALUE words
// before xl, as a user would type them) and waits for the guest's firstLine
// on its console. The domain starts paused, "xl console" attaches (the
// serial pty drops what the guest writes while nobody has it open), and
// then it runs.
//
// Xen under the lab's TCG now and then crashes an HVM guest inside its
// firmware, before the guest's own code runs: Xen's log shows "Triple
// fault" or "MMIO emulation failed" for that domain (a flaw of the
// emulated nested paging: a real Xen host does not do this, and a device
// model that broke the guest would break it every time). Such a domain is
// created once more, and the test's log says so with Xen's lines; a second
// crash, or a guest that stays silent without one, fails the test.
func create(t testing.TB, name, cfg, firstLine string, env ...string) *domain {
	t.Helper()
	path := labDir + "/" + name + ".cfg"
	put(t, []byte(cfg), path)
	t.Cleanup(func() {
		_, _ = try(fmt.Sprintf("xl destroy %[1]s 2>/dev/null; pkill -F /tmp/console-%[1]s.pid 2>/dev/null; true", name))
	})
	for attempt := 1; ; attempt++ {
		d := createPaused(t, name, path, cfg, env)
		out, err := try(waitFirstLine(d, firstLine))
		if err == nil {
			return d
		}
		var exit *exec.ExitError
		fault := errors.As(err, &exit) && exit.ExitCode() == guestFaultStatus
		require.True(t, fault && attempt == 1, "domain %d (%s) never showed %q on its console: %v\n%s", d.domid, name, firstLine, err, out)
		t.Logf("domain %d (%s) crashed in its firmware under the lab's emulation; creating it once more. Xen's log:\n%s", d.domid, name, out)
		run(t, fmt.Sprintf("xl destroy %[1]s 2>/dev/null; pkill -F /tmp/console-%[1]s.pid 2>/dev/null; true", name))
	}
}

// createPaused creates the domain paused, attaches "xl console" to it and
// unpauses it.
func createPaused(t testing.TB, name, path, cfg string, env []string) *domain {
	t.Helper()
	// A domain of that name left by an earlier run that was cut short.
	run(t, "xl destroy "+name+" 2>/dev/null; true")
	run(t, strings.Join(append(env, "xl create -p "+path), " "))
	console := "serial"
	if strings.Contains(cfg, `type = "pv"`) {
		console = "pv"
	}
	d := &domain{name: name, domid: domidOf(t, name)}
	run(t, fmt.Sprintf(`
fifo=$(mktemp -u); mkfifo "$fifo"
# A stdin that never writes: with /dev/null xl console spins.
setsid xl console -t %[2]s %[1]s <>"$fifo" >/tmp/console-%[1]s.log 2>&1 & pid=$!
echo $pid >/tmp/console-%[1]s.pid
end=$((SECONDS + 60))
until ls -l /proc/$pid/fd 2>/dev/null | grep -q /dev/pts/; do
	kill -0 $pid 2>/dev/null && [ $SECONDS -lt $end ] || { cat /tmp/console-%[1]s.log; echo "xentest: xl console did not attach"; exit 1; }
	sleep 0.1
done
rm -f "$fifo"
xl unpause %[1]s`, name, console))
	return d
}

// guestFaultStatus is waitFirstLine's exit status when Xen's log shows the
// guest crashed.
const guestFaultStatus = 3

// waitFirstLine is a dom0 script that waits until the console create
// attached has shown want; it exits with guestFaultStatus, printing Xen's
// lines, as soon as Xen's log shows the domain crashed.
func waitFirstLine(d *domain, want string) string {
	return fmt.Sprintf(`
fault='(d%[2]dv[0-9]+ Triple fault|MMIO emulation failed \([0-9]+\): d%[2]dv)'
end=$((SECONDS + %[4]d)); n=0
until grep -qF -- %[3]q /tmp/console-%[1]s.log; do
	if [ $((n %% 10)) = 0 ] && xl dmesg | grep -qE "$fault"; then
		xl dmesg | grep -E -A3 "$fault"; exit %[5]d
	fi
	if [ $SECONDS -ge $end ]; then cat /tmp/console-%[1]s.log; echo "xentest: no %[3]q on the console"; exit 1; fi
	n=$((n + 1)); sleep 0.2
done`, d.name, d.domid, want, int(consoleTimeout/time.Second), guestFaultStatus)
}

func domidOf(t testing.TB, name string) int {
	t.Helper()
	out := strings.TrimSpace(run(t, "xl domid "+name))
	id, err := strconv.Atoi(out)
	require.NoError(t, err, "xl domid %s printed %q", name, out)
	return id
}

// destroy runs xl destroy and checks that nothing of the domain is left:
// not in xl list, no process that names its domid.
func (d *domain) destroy(t testing.TB) {
	t.Helper()
	run(t, "xl destroy "+d.name)
	out := run(t, "xl list")
	require.NotRegexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(d.name)+`\s`), out, "still listed after xl destroy")
	require.NotContains(t, out, "(null)", "a domain left as (null): its device model outlived the destroy")
	procs := run(t, fmt.Sprintf("pgrep -af -- '-xen-domid %d( |$)' || true", d.domid))
	require.Empty(t, strings.TrimSpace(procs), "processes left for domid %d after xl destroy", d.domid)
}

// setConfig writes dom0's /etc/dmlaunch/dmlaunch.conf for the test and
// puts the pass-through one back afterwards.
func setConfig(t testing.TB, lines ...string) {
	t.Helper()
	put(t, []byte(strings.Join(lines, "\n")+"\n"), "/etc/dmlaunch/dmlaunch.conf")
	t.Cleanup(func() { _, _ = try("cp /root/dmlaunch/scripts/dmlaunch.conf /etc/dmlaunch/dmlaunch.conf") })
}

func xenstoreRead(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "xenstore-read "+path))
}
