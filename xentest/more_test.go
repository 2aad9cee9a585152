//go:build xenlab

package xentest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// launchLineRE matches the line a launch writes ("dmlaunch: domain 5 (web):
// hvm, ..."), not the debug port's or the console's later lines.
var launchLineRE = regexp.MustCompile(`^dmlaunch: domain \d+ \([^)]*\): [a-z-]+, `)

// launchLine is dmlaunch's line in the domain's qemu-dm log (the last one:
// the log is rotated per domain name, a restore adds its own).
func launchLine(t *testing.T, name string) string {
	t.Helper()
	log := run(t, "cat /var/log/xen/qemu-dm-"+name+".log")
	var last string
	for _, line := range strings.Split(log, "\n") {
		if launchLineRE.MatchString(line) {
			last = line
		}
	}
	require.NotEmpty(t, last, "no dmlaunch line in qemu-dm-%s.log:\n%s", name, log)
	return last
}

// nothingLeft checks that no device model, gdbserver or launcher of domid is
// running, and that dmctl list shows no live launch for it.
func nothingLeft(t *testing.T, d *domain) {
	t.Helper()
	procs := run(t, fmt.Sprintf("pgrep -af -- '-xen-domid %d( |$)' || true; pgrep -a gdbserver || true", d.domid))
	assert.Empty(t, strings.TrimSpace(procs), "left running for domid %d", d.domid)
	noLiveRecord(t, d)
}

// DMLAUNCH_DEBUG_DOMAINS picks one of two guests by name: the other one is
// passed through.
func TestDebugDomainsByName(t *testing.T) {
	setConfig(t, gdbConfig("gdb", "DMLAUNCH_DEBUG_DOMAINS=pick-b")...)
	a := create(t, "pick-a", hvmConfig("pick-a", bootDisk(t, "pick-a", "pick-a: passed through")), "pick-a: passed through")
	b := create(t, "pick-b", hvmConfig("pick-b", bootDisk(t, "pick-b", "pick-b: debuggable")), "pick-b: debuggable")
	assert.Contains(t, launchLine(t, "pick-a"), ", pass-through: ")
	assert.Contains(t, launchLine(t, "pick-b"), ", debug gdb;")
	out, err := outerGDB(t, gdbAddr(t, b.domid), 3*time.Minute, "info threads", "detach")
	require.NoError(t, err, "outer gdb on pick-b:\n%s", out)
	assert.Regexp(t, threadLine, out)
	a.destroy(t)
	b.destroy(t)
	nothingLeft(t, a)
	nothingLeft(t, b)
}

// gdb-wait, and a gdb that detaches within libxl's wait: QEMU goes on from
// its first instruction and the domain is created.
func TestGDBWaitReleasedInTime(t *testing.T) {
	const name = "wait-ok"
	setConfig(t, gdbConfig("gdb-wait")...)
	cfg := labDir + "/" + name + ".cfg"
	put(t, []byte(hvmConfig(name, bootDisk(t, name, name+": started after gdb let go"))), cfg)
	t.Cleanup(func() { _, _ = try("xl destroy " + name + " 2>/dev/null; true") })

	created := make(chan error, 1)
	go func() {
		_, err := try("xl create -p " + cfg)
		created <- err
	}()
	id := waitDomid(t, name)
	waitListening(t, id)
	out, err := outerGDB(t, gdbAddr(t, id), libxlWait, "info threads", "detach")
	require.NoError(t, err, "outer gdb:\n%s", out)
	assert.Contains(t, out, "detached]")
	require.NoError(t, <-created, "xl create with gdb-wait, released in time")
	assert.Contains(t, launchLine(t, name), ", debug gdb-wait;")
	run(t, "xl unpause "+name)
	d := &domain{name: name, domid: id}
	d.destroy(t)
	nothingLeft(t, d)
}

// gdb-wait and nobody comes: libxl gives up after its 60 s and destroys the
// domain; the launcher takes QEMU and gdbserver down with it.
func TestGDBWaitNobodyComes(t *testing.T) {
	const name = "wait-none"
	setConfig(t, gdbConfig("gdb-wait")...)
	cfg := labDir + "/" + name + ".cfg"
	put(t, []byte(hvmConfig(name, bootDisk(t, name, name+": never"))), cfg)
	t.Cleanup(func() { _, _ = try("xl destroy " + name + " 2>/dev/null; true") })
	start := time.Now()
	_, err := try("xl create -p " + cfg)
	took := time.Since(start)
	require.Error(t, err, "xl create must fail when QEMU never reports running")
	out := err.Error()
	assert.Contains(t, out, "device model did not start")
	assert.GreaterOrEqual(t, took, libxlWait, "libxl waited its 60 s")
	assert.NotContains(t, run(t, "xl list"), name)
	id := regexp.MustCompile(`Domain (\d+):`).FindStringSubmatch(out)
	require.NotNil(t, id, "no domid in xl's messages:\n%s", out)
	d := &domain{name: name}
	_, _ = fmt.Sscan(id[1], &d.domid)
	waitGone(t, d)
	nothingLeft(t, d)
}

// waitDomid waits until a domain of that name exists and returns its domid.
func waitDomid(t *testing.T, name string) int {
	t.Helper()
	out := run(t, fmt.Sprintf(`end=$((SECONDS + 240)); until xl domid %[1]s 2>/dev/null; do [ $SECONDS -lt $end ] || { echo "xentest: no domain %[1]s"; exit 1; }; sleep 0.2; done`, name))
	var id int
	_, err := fmt.Sscan(strings.TrimSpace(out), &id)
	require.NoError(t, err, "xl domid %s: %q", name, out)
	return id
}

// waitListening waits until dom0 listens on the debug port for domid: the
// lab's forward resets a connection that finds nothing there.
func waitListening(t *testing.T, domid int) {
	t.Helper()
	run(t, fmt.Sprintf(`end=$((SECONDS + 120)); until ss -Hltn "sport = :%d" | grep -q LISTEN; do [ $SECONDS -lt $end ] || { echo "xentest: nothing listens on port %d" >&2; exit 1; }; sleep 0.2; done`, 1234+domid, 1234+domid))
}

// waitGone waits until no process names the domid any more (the launcher
// tears QEMU down after libxl's SIGHUP, with a grace period).
func waitGone(t *testing.T, d *domain) {
	t.Helper()
	run(t, fmt.Sprintf(`end=$((SECONDS + 60)); while pgrep -f -- '-xen-domid %d( |$)' >/dev/null || pgrep gdbserver >/dev/null; do [ $SECONDS -lt $end ] || exit 0; sleep 0.5; done`, d.domid))
}

// xl save and xl restore of an HVM guest, in pass-through and in gdb mode:
// libxl hands the restored QEMU its saved state; the guest runs again.
func TestSaveRestore(t *testing.T) {
	for _, mode := range []string{"pass-through", "gdb"} {
		t.Run(mode, func(t *testing.T) {
			name := "save-" + strings.ReplaceAll(mode, "-", "")
			if mode == "gdb" {
				setConfig(t, gdbConfig("gdb")...)
			}
			d := create(t, name, hvmConfig(name, bootDisk(t, name, name+": before the save")), name+": before the save")
			img := labDir + "/" + name + ".save"
			run(t, "xl save "+name+" "+img)
			assert.NotContains(t, run(t, "xl list"), name, "xl save ends the domain")
			waitGone(t, d)
			nothingLeft(t, d)

			run(t, "xl restore "+img)
			r := &domain{name: name, domid: domidOf(t, name)}
			line := launchLine(t, name)
			assert.Contains(t, line, "-incoming ", "the restored QEMU gets its state")
			t.Logf("libxl argv (restore, %s): %s", mode, line)
			if mode == "gdb" {
				assert.Contains(t, line, ", debug gdb;")
				out, err := outerGDB(t, gdbAddr(t, r.domid), 3*time.Minute, "info threads", "detach")
				require.NoError(t, err, "outer gdb on the restored QEMU:\n%s", out)
				assert.Regexp(t, threadLine, out)
			} else {
				assert.Contains(t, line, ", pass-through: ")
			}
			state := run(t, "xl list "+name)
			assert.NotRegexp(t, `\s[-rb]+p[-]*\s`, state, "the restored guest is not paused:\n%s", state)
			r.destroy(t)
			nothingLeft(t, r)
		})
	}
}

// pvConfig is a PV guest booted with dom0's own kernel and initrd from a
// disk served by QEMU's qdisk backend, with a vfb: both give the guest a
// device model.
func pvConfig(name, disk string) string {
	return strings.Join([]string{
		fmt.Sprintf("name = %q", name),
		`type = "pv"`,
		`kernel = "/var/lib/xenlab/vmlinuz"`,
		`ramdisk = "/var/lib/xenlab/initrd.img"`,
		`extra = "root=/dev/xvda ro console=hvc0 init=/init quiet"`,
		"memory = 512",
		"vcpus = 1",
		fmt.Sprintf(`disk = [ "format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=%s" ]`, disk),
		`vfb = [ "vnc=1,vnclisten=127.0.0.1" ]`,
	}, "\n") + "\n"
}

// A PV guest whose root disk is served by its device model (qdisk) and that
// has a vfb; and dom0's own QEMU, which Debian's /etc/init.d/xen started
// through dmlaunch before any guest.
func TestPVQdiskAndDom0QEMU(t *testing.T) {
	const name = "pv-qdisk"
	marker := fmt.Sprintf("pv-qdisk-marker-%d", time.Now().UnixNano())
	disk := labDir + "/" + name + ".ext4"
	run(t, fmt.Sprintf(`set -e
mkdir -p %[1]s; d=$(mktemp -d); mkdir -p $d/bin $d/dev $d/proc $d/sys
cp /bin/busybox $d/bin/busybox
echo %[2]s > $d/marker
printf '#!/bin/busybox sh\n/bin/busybox echo "pv guest read from its disk: $(/bin/busybox cat /marker)"\nexec /bin/busybox sleep 1000000\n' > $d/init
chmod 0755 $d/init
rm -f %[3]s; mke2fs -q -t ext4 -d $d %[3]s 32M; rm -rf $d`, labDir, marker, disk))

	d := create(t, name, pvConfig(name, disk), "pv guest read from its disk: "+marker)
	line := launchLine(t, name)
	assert.Contains(t, line, fmt.Sprintf("dmlaunch: domain %d (%s): pv, domid from -xen-domid, pass-through: ", d.domid, name))
	assert.Contains(t, line, " -xen-attach ")
	assert.Contains(t, line, " -machine xenpv ")
	t.Logf("libxl argv (pv qdisk+vfb): %s", line)
	pid := xenstoreRead(t, fmt.Sprintf("/local/domain/%d/image/device-model-pid", d.domid))
	assert.Equal(t, realQEMU, strings.TrimSpace(run(t, "readlink /proc/"+pid+"/exe")))
	d.destroy(t)
	nothingLeft(t, d)

	// dom0's QEMU: the real one, exec'd by dmlaunch, which recorded it.
	dom0 := strings.TrimSpace(run(t, "cat /run/qemu-dom0.pid"))
	assert.Equal(t, realQEMU, strings.TrimSpace(run(t, "readlink /proc/"+dom0+"/exe")), "dom0's QEMU")
	rec := run(t, "cat /run/dmlaunch/0-qdisk.json")
	assert.Contains(t, rec, `"name":"dom0"`, "dmlaunch's record of dom0's QEMU")
	assert.Contains(t, rec, `"-daemonize"`)
	// QEMU forked away from the pid dmlaunch exec'd for -daemonize: dmctl
	// follows its pidfile and lists it as running, with the daemon's pid.
	var entries []struct {
		Domid     int    `json:"domid"`
		Kind      string `json:"kind"`
		State     string `json:"state"`
		DaemonPID int    `json:"daemon_pid"`
	}
	require.NoError(t, json.Unmarshal([]byte(run(t, "dmctl list --json")), &entries))
	found := false
	for _, e := range entries {
		if e.Domid == 0 && e.Kind == "qdisk" {
			found = true
			assert.Equal(t, "running", e.State, "dom0's QEMU in dmctl list")
			assert.Equal(t, dom0, fmt.Sprint(e.DaemonPID), "the daemon's pid, from /run/qemu-dom0.pid")
		}
	}
	assert.True(t, found, "dmctl list --json has no entry for dom0's QEMU")
}
