package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// saveCrash writes a crash record (and a stand-in core) into logDir.
func saveCrash(t *testing.T, logDir string, c coredump.Crash, withCore bool) coredump.Crash {
	base := coredump.BaseName(c.Domid, c.Name, c.Time)
	c.Record = filepath.Join(logDir, base+".json")
	if withCore {
		c.Core = filepath.Join(logDir, base+".core")
		require.NoError(t, os.WriteFile(c.Core, []byte("core"), 0o600))
		c.CoreSize, c.Whole = 4, true
	}
	require.NoError(t, c.Save())
	return c
}

func TestCrashesListsEachDomainsCrashes(t *testing.T) {
	logDir := t.TempDir()
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	old := saveCrash(t, logDir, coredump.Crash{Domid: 5, Name: "web1", QEMU: "/q", PID: 10, Signal: "SIGSEGV", SignalNumber: 11, Time: t0}, true)
	off := saveCrash(t, logDir, coredump.Crash{Domid: 6, Name: "db\x1b[2J", QEMU: "/q", PID: 11, Signal: "SIGABRT", SignalNumber: 6, Time: t0.Add(time.Minute),
		Note: "cores are off: the core size limit is 0 (DMLAUNCH_CORE_LIMIT=0)"}, false)
	newer := saveCrash(t, logDir, coredump.Crash{Domid: 5, Name: "web1", QEMU: "/q", PID: 12, Signal: "SIGABRT", SignalNumber: 6, Time: t0.Add(time.Hour)}, true)

	out, _, status := dmctl(t, "crashes", "--log-dir", logDir)
	require.Equal(t, 0, status)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Contains(t, lines[0], "SIGNAL")
	assert.Contains(t, lines[1], old.Core, "oldest first")
	assert.Contains(t, lines[2], "none: cores are off")
	assert.Contains(t, lines[2], `db\x1b[2J`, "a guest's name cannot send terminal sequences")
	assert.Contains(t, lines[3], newer.Core)

	out, _, status = dmctl(t, "crashes", "6", "--log-dir", logDir, "--json")
	require.Equal(t, 0, status)
	var got []coredump.Crash
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got, 1)
	assert.Equal(t, off, got[0])

	out, _, status = dmctl(t, "crashes", "9", "--log-dir", logDir)
	assert.Equal(t, 0, status)
	assert.Contains(t, out, "no crashes recorded")
	_, stderr, status := dmctl(t, "crashes", "x", "--log-dir", logDir)
	assert.Equal(t, exitUsage, status)
	assert.Contains(t, stderr, "not a decimal number")
}

func TestGDBCorePicksTheNewestCore(t *testing.T) {
	logDir := t.TempDir()
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	sleep := realtest.Need(t, "sleep")[0]
	saveCrash(t, logDir, coredump.Crash{Domid: 5, Name: "web1", QEMU: sleep, PID: 10, Signal: "SIGSEGV", Time: t0}, true)
	newer := saveCrash(t, logDir, coredump.Crash{Domid: 5, Name: "web1", QEMU: sleep, BuildID: "00ff", PID: 12, Signal: "SIGABRT", Time: t0.Add(time.Hour)}, true)
	saveCrash(t, logDir, coredump.Crash{Domid: 5, Name: "web1", QEMU: sleep, PID: 13, Signal: "SIGABRT", Time: t0.Add(2 * time.Hour), Note: "no core"}, false)

	out, stderr, status := dmctl(t, "gdb", "5", "--core", "--print", "--log-dir", logDir)
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, out, "gdb -q -ex 'set sysroot /' "+sleep+" "+newer.Core)
	assert.Contains(t, stderr, "but build 00ff crashed", "a replaced binary is said")

	tests := []struct {
		name, domid, want string
	}{
		{"no crash", "7", "no crash recorded"},
		{"no core", "8", "no core kept for its crashes"},
	}
	saveCrash(t, logDir, coredump.Crash{Domid: 8, QEMU: sleep, Signal: "SIGSEGV", Time: t0, Note: "cores are off"}, false)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, status := dmctl(t, "gdb", tt.domid, "--core", "--log-dir", logDir)
			assert.Equal(t, exitFailure, status)
			assert.Contains(t, stderr, tt.want)
		})
	}
}

// A real core of a real crash, opened by dmctl gdb --core in the real gdb.
func TestGDBCoreOpensARealCore(t *testing.T) {
	paths := realtest.Need(t, "sleep", "gdb")
	pat, err := coredump.ReadPattern("/proc/sys")
	require.NoError(t, err)
	if pat.Kind() != coredump.ToFile {
		t.Skipf("kernel.core_pattern %q is not a file pattern", pat.Raw)
	}
	old := coredump.Current()
	_, err = coredump.Limit(coredump.Unlimited).Apply()
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = old.Apply() })

	work, logDir := t.TempDir(), t.TempDir()
	cmd := exec.Command(paths[0], "100")
	cmd.Dir = work
	started := time.Now()
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { // past the dynamic loader, asleep
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		i := strings.LastIndexByte(string(b), ')')
		return err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'S'
	}, 10*time.Second, 2*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGSEGV))
	_ = cmd.Wait()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	var c coredump.Collector
	cr := c.Collect(coredump.Launch{Domid: 4, Name: "real", QEMU: paths[0], PID: cmd.Process.Pid, Started: started,
		Dir: work, Root: "/", LogDir: logDir, Limit: coredump.Limit(coredump.Unlimited)}, ws.Signal(), ws.CoreDump())
	require.NotEmpty(t, cr.Core, cr.Note)
	require.NoError(t, cr.Save())

	g := exec.Command(dmctlBin, "gdb", "4", "--core", "--log-dir", logDir)
	g.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	g.Stdin = strings.NewReader("info inferiors\nbt\n")
	out, err := g.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "Program terminated with signal SIGSEGV")
	assert.NotContains(t, string(out), "past end of file", "the core is whole")
	assert.Regexp(t, `#0 .*nanosleep`, string(out), "frames come from the binary that crashed and its libraries")
}

func TestDoctorCoreChecks(t *testing.T) {
	self, err := proc.Self()
	require.NoError(t, err)
	tests := []struct {
		name    string
		pattern string
		suid    string
		runas   bool
		check   string
		ok      bool
		want    string
	}{
		{"relative", "core", "0", false, "core pattern", true, "dmlaunch moves each beside the console log"},
		{"empty", "", "0", false, "core pattern", false, "is empty"},
		{"missing handler", "|/usr/lib/nothing-here %p", "0", false, "core pattern", false, "which is not there"},
		{"missing directory", "/var/crash-nowhere/core.%p", "0", false, "core pattern", false, "not a writable directory"},
		{"absolute", "/tmp/core.%e.%p", "0", false, "core pattern", true, "renamed by domain"},
		{"runas, suid 0", "/tmp/core.%p", "0", true, "suid dumpable", false, "its crashes leave no core"},
		{"runas, suid 2, relative", "core", "2", true, "suid dumpable", false, "ignores the relative"},
		{"runas, suid 2", "/tmp/core.%p", "2", true, "suid dumpable", true, "can dump core"},
		{"no runas", "core", "0", false, "suid dumpable", true, "no running launch uses -runas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := installedRoot(t)
			sys := filepath.Join(root, "proc/sys")
			require.NoError(t, os.MkdirAll(filepath.Join(sys, "kernel"), 0o755))
			require.NoError(t, os.MkdirAll(filepath.Join(sys, "fs"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(sys, "kernel/core_pattern"), []byte(tt.pattern+"\n"), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(sys, "fs/suid_dumpable"), []byte(tt.suid+"\n"), 0o644))
			require.NoError(t, os.MkdirAll(filepath.Join(root, "tmp"), 0o1777))
			if tt.runas {
				state := filepath.Join(root, "run/dmlaunch")
				require.NoError(t, os.MkdirAll(state, 0o700))
				_, err := registry.Write(state, registry.Record{Domid: 3, Kind: "hvm", Launcher: self, QEMUPID: self.PID,
					Argv: []string{"qemu", "-xen-domid", "3", "-runas", "101:101"}})
				require.NoError(t, err)
			}
			checks, status := doctorChecks(t, root)
			c, ok := checks[tt.check]
			require.True(t, ok, "check %q ran", tt.check)
			assert.Equal(t, tt.ok, c.OK, c.Detail)
			assert.Contains(t, c.Detail, tt.want)
			if !tt.ok {
				assert.Equal(t, exitFailure, status)
				assert.NotEmpty(t, c.Fix)
			}
		})
	}
}

// A domain's QEMU crashes under dmlaunch: dmctl lists the crash and opens
// its core in gdb with the real QEMU.
func TestCrashedDomainThroughDmctl(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "gdb")
	pat, err := coredump.ReadPattern("/proc/sys")
	require.NoError(t, err)
	if pat.Kind() != coredump.ToFile {
		t.Skipf("kernel.core_pattern %q is not a file pattern", pat.Raw)
	}
	state := filepath.Join(t.TempDir(), "state")
	d := startDomain(t, state, 6, "console", "doomed", "doomed guest")
	rec := d.record(t)
	logDir := filepath.Dir(rec.ConsoleLog)
	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGSEGV))
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatal("dmlaunch did not exit")
	}

	out, err := exec.Command(dmctlBin, "crashes", "6", "--log-dir", logDir).Output()
	require.NoError(t, err)
	assert.Regexp(t, `\n\S+ \S+ +6 +doomed +\d+ +SIGSEGV +`+regexp.QuoteMeta(logDir)+`/dmlaunch-crash-6-doomed-\S+\.core +\d+\n`, string(out))

	g := exec.Command(dmctlBin, "gdb", "6", "--core", "--log-dir", logDir)
	g.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	g.Stdin = strings.NewReader("bt\n")
	got, err := g.CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Contains(t, string(got), "Reading symbols from "+paths[0])
	assert.Contains(t, string(got), "Program terminated with signal SIGSEGV")
	assert.Contains(t, string(got), "in qemu_main_loop ()", "the main thread's frames are QEMU's")
	assert.NotContains(t, string(got), "past end of file")
	assert.NotContains(t, string(got), "warning: dmctl", "the binary is the one that crashed")
}
