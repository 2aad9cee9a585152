package coredump

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in   string
		want Limit
		text string
	}{
		{"unlimited", Limit(Unlimited), "unlimited"},
		{"0", 0, "0"},
		{"4096", 4096, "4K"},
		{"512M", 512 << 20, "512M"},
		{"2g", 2 << 30, "2G"},
		{" 100 ", 100, "100"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLimit(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.text, got.String())
		})
	}
	for _, bad := range []string{"", "-1", "lots", "1T", "99999999999999999999G", "M"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := ParseLimit(bad)
			assert.ErrorContains(t, err, "is not a size")
		})
	}
}

func TestPatternGlob(t *testing.T) {
	f := Facts{PID: 4242, Signal: 11, Hostname: "xen/host", Exe: "/usr/libexec/qemu-system-i386"}
	tests := []struct {
		raw     string
		usesPID bool
		kind    string
		want    string
	}{
		{"core", false, ToFile, "core"},
		{"core", true, ToFile, "core.4242"},
		{"core.%p", true, ToFile, "core.4242"},
		{"core.%P", true, ToFile, "core.4242.4242"}, // only %p stops the kernel's suffix
		{"/var/crash/core.%e.%p.%t", false, ToFile, "/var/crash/core.*.4242.*"},
		{"/cores/%E-%s-%h", false, ToFile, "/cores/!usr!libexec!qemu-system-i386-11-xen!host"},
		{"/c/100%%-%u-%g-%i-%I-%d-%c-%f-%q-%", false, ToFile, "/c/100%-*-*-*-*-*-*-*--"},
		{"/c/odd[name]*?", false, ToFile, `/c/odd\[name]\*\?`},
		{"|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", false, ToHandler, ""},
		{"@/run/coredump.socket", false, ToSocket, ""},
		{"", false, ToNowhere, ""},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			p := Pattern{Raw: tt.raw, UsesPID: tt.usesPID}
			assert.Equal(t, tt.kind, p.Kind())
			if tt.kind == ToFile {
				assert.Equal(t, tt.want, p.Glob(f))
			}
		})
	}
	assert.Equal(t, "/lib/systemd/systemd-coredump", Pattern{Raw: "|/lib/systemd/systemd-coredump %P"}.Handler())
	assert.Equal(t, "/run/coredump.socket", Pattern{Raw: "@/run/coredump.socket"}.Handler())
	assert.Empty(t, Pattern{Raw: "core"}.Handler())
}

func TestNames(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 0, time.FixedZone("x", 3600))
	assert.Equal(t, "dmlaunch-crash-5-web1-20261202T140405Z", BaseName(5, "web1", at))
	assert.Equal(t, "dmlaunch-crash-7-_-20261202T140405Z", BaseName(7, "", at))
	assert.Equal(t, "_.._etc_passwd_x_", SafeName("../../etc/passwd x;"))
	assert.Equal(t, "a_b_c", SafeName("a/b c"))
	assert.Len(t, SafeName(strings.Repeat("n", 300)), 64)
}

func TestCoreSignal(t *testing.T) {
	for _, s := range []syscall.Signal{syscall.SIGSEGV, syscall.SIGABRT, syscall.SIGBUS, syscall.SIGQUIT} {
		assert.True(t, CoreSignal(s), s.String())
	}
	for _, s := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGHUP} {
		assert.False(t, CoreSignal(s), s.String())
	}
	assert.Equal(t, "SIGSEGV", SignalName(syscall.SIGSEGV))
}

// fakeProcSys makes a /proc/sys with the given kernel settings.
func fakeProcSys(t *testing.T, pattern, usesPID, suid string) string {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kernel"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "fs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel/core_pattern"), []byte(pattern+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel/core_uses_pid"), []byte(usesPID+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fs/suid_dumpable"), []byte(suid+"\n"), 0o644))
	return dir
}

func TestWhyNoCore(t *testing.T) {
	logDir := t.TempDir()
	tests := []struct {
		name    string
		pattern string
		suid    string
		l       Launch
		want    string
	}{
		{"limit 0", "core", "0", Launch{Limit: 0, Dir: "/"}, "DMLAUNCH_CORE_LIMIT=0"},
		{"empty pattern", "", "0", Launch{Limit: Limit(Unlimited)}, "core_pattern is empty"},
		{"runas", "/var/crash/core", "0", Launch{Limit: Limit(Unlimited), RunAs: true}, "fs.suid_dumpable is 0"},
		{"runas allowed", "/var/crash/core", "2", Launch{Limit: Limit(Unlimited), RunAs: true}, `core_pattern "/var/crash/core"`},
		{"relative", "core", "0", Launch{Limit: Limit(Unlimited), Dir: "/srv"}, "core in /srv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Collector{ProcSys: fakeProcSys(t, tt.pattern, "0", tt.suid)}
			tt.l.LogDir, tt.l.QEMU, tt.l.Name, tt.l.Domid, tt.l.PID = logDir, "/nonexistent/qemu", "g1", 3, 99
			cr := c.Collect(tt.l, syscall.SIGSEGV, false)
			assert.Contains(t, cr.Note, tt.want)
			assert.Empty(t, cr.Core)
			assert.Contains(t, cr.Summary(), "QEMU (pid 99) was killed by SIGSEGV (segmentation fault); no core: ")
			assert.Equal(t, logDir, filepath.Dir(cr.Record))
		})
	}
}

func TestHandlerPattern(t *testing.T) {
	c := Collector{ProcSys: fakeProcSys(t, "|/usr/share/apport/apport -p%p -s%s -c%c", "0", "2")}
	cr := c.Collect(Launch{LogDir: t.TempDir(), Limit: Limit(Unlimited), PID: 5}, syscall.SIGABRT, true)
	assert.Equal(t, "/usr/share/apport/apport", cr.Handler)
	assert.Equal(t, "handed to /usr/share/apport/apport, which keeps it", cr.Note)
	assert.Contains(t, cr.Summary(), "; core handed to /usr/share/apport/apport")
	cr = c.Collect(Launch{LogDir: t.TempDir(), Limit: 0, PID: 5}, syscall.SIGABRT, true)
	assert.Contains(t, cr.Note, "core size limit of 0")
}

func TestRecordIsJSON(t *testing.T) {
	cr := Crash{Domid: 5, Name: "we\"ird\x01", Kind: "hvm", Mode: "console", QEMU: "/q", BuildID: "ab12", PID: 7,
		Signal: "SIGSEGV", SignalNumber: 11, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Core: "/l/x.core", CoreSize: 123, CoreAllocated: 4096, Whole: true, Note: "n", Backtrace: 9, Record: filepath.Join(t.TempDir(), "r.json")}
	require.NoError(t, cr.Save())
	b, err := os.ReadFile(cr.Record)
	require.NoError(t, err)
	var back Crash
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, cr, back)
	fi, err := os.Stat(cr.Record)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// crashSleep starts sleep(1) in dir, kills it with sig and reaps it.
func crashSleep(t *testing.T, dir string, sig syscall.Signal) (pid int, started time.Time, ws syscall.WaitStatus) {
	sleep := realtest.Need(t, "sleep")[0]
	cmd := exec.Command(sleep, "100")
	cmd.Dir = dir
	started = time.Now()
	require.NoError(t, cmd.Start())
	WaitSleeping(t, cmd.Process.Pid)
	require.NoError(t, cmd.Process.Signal(sig))
	_ = cmd.Wait()
	return cmd.Process.Pid, started, cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// WaitSleeping waits until the process sleeps: past the dynamic loader,
// in the program proper, whose frames the test looks for in the core.
func WaitSleeping(t *testing.T, pid int) {
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(b), ')')
		return i > 0 && i+2 < len(b) && b[i+2] == 'S'
	}, 10*time.Second, 2*time.Millisecond)
}

// withCoreLimit sets this test process's RLIMIT_CORE for one test.
func withCoreLimit(t *testing.T, l Limit) {
	old := Current()
	_, err := l.Apply()
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = old.Apply() })
}

func needFilePattern(t *testing.T) Pattern {
	pat, err := ReadPattern("/proc/sys")
	require.NoError(t, err)
	if pat.Kind() != ToFile {
		t.Skipf("kernel.core_pattern %q hands cores to a handler; this test needs a file pattern", pat.Raw)
	}
	return pat
}

func TestCollectARealCore(t *testing.T) {
	needFilePattern(t)
	gdb := realtest.Need(t, "gdb")[0]
	withCoreLimit(t, Limit(Unlimited))
	work, logDir := t.TempDir(), t.TempDir()
	pid, started, ws := crashSleep(t, work, syscall.SIGSEGV)
	require.True(t, ws.Signaled())
	require.True(t, ws.CoreDump(), "the kernel reports a core")
	sleep, _ := exec.LookPath("sleep")
	l := Launch{Domid: 9, Name: "crash guest", Kind: "hvm", Mode: "console", QEMU: sleep, PID: pid, Started: started,
		Dir: work, Root: "/", LogDir: logDir, Limit: Limit(Unlimited)}
	var c Collector
	cr := c.Collect(l, ws.Signal(), ws.CoreDump())
	require.NotEmpty(t, cr.Core, cr.Note)
	assert.True(t, strings.HasPrefix(filepath.Base(cr.Core), "dmlaunch-crash-9-crash_guest-"), cr.Core)
	assert.True(t, strings.HasSuffix(cr.Core, ".core"))
	assert.True(t, cr.Whole)
	info, err := ReadCore(cr.Core)
	require.NoError(t, err)
	assert.Equal(t, pid, info.PID, "the core is this process's")
	assert.Equal(t, "sleep", info.Command)
	assert.Equal(t, cr.CoreSize, info.Size)
	fi, err := os.Stat(cr.Core)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "a core holds guest memory")
	assert.NotEmpty(t, cr.BuildID)
	assert.Contains(t, cr.Summary(), "dumped core: "+cr.Core)
	assert.Contains(t, cr.Summary(), "whole")

	tr, err := Backtrace(context.Background(), gdb, sleep, cr.Core)
	require.NoError(t, err)
	text := strings.Join(tr.Lines, "\n")
	assert.Contains(t, text, "Program terminated with signal SIGSEGV")
	assert.Contains(t, text, "#0 ")
	assert.Contains(t, text, "nanosleep", "frames come from the binary and its libraries")
	assert.False(t, tr.CoreCutShort)
}

func TestACoreCutShortIsSaidSo(t *testing.T) {
	needFilePattern(t)
	gdb := realtest.Need(t, "gdb")[0]
	withCoreLimit(t, 64<<10)
	work := t.TempDir()
	pid, started, ws := crashSleep(t, work, syscall.SIGABRT)
	require.True(t, ws.CoreDump())
	sleep, _ := exec.LookPath("sleep")
	c := Collector{}
	cr := c.Collect(Launch{QEMU: sleep, PID: pid, Started: started, Dir: work, Root: "/", LogDir: t.TempDir(), Limit: 64 << 10}, ws.Signal(), true)
	require.NotEmpty(t, cr.Core, cr.Note)
	assert.False(t, cr.Whole)
	info, err := ReadCore(cr.Core)
	require.NoError(t, err)
	assert.Less(t, info.Size, info.Want, "the file ends before its last segment")
	assert.Contains(t, cr.Summary(), "CUT SHORT")
	tr, err := Backtrace(context.Background(), gdb, sleep, cr.Core)
	require.NoError(t, err)
	assert.True(t, tr.CoreCutShort, "gdb's truncation warning is noticed:\n%s", strings.Join(tr.Lines, "\n"))
}

func TestLimitZeroWritesNoCore(t *testing.T) {
	needFilePattern(t)
	withCoreLimit(t, 0)
	work := t.TempDir()
	pid, started, ws := crashSleep(t, work, syscall.SIGSEGV)
	assert.False(t, ws.CoreDump())
	c := Collector{}
	cr := c.Collect(Launch{PID: pid, Started: started, Dir: work, Root: "/", LogDir: t.TempDir(), Limit: 0}, ws.Signal(), ws.CoreDump())
	assert.Empty(t, cr.Core)
	assert.Contains(t, cr.Note, "DMLAUNCH_CORE_LIMIT=0")
	ents, _ := os.ReadDir(work)
	assert.Empty(t, ents)
}

func TestApplyRaisesAndCaps(t *testing.T) {
	withCoreLimit(t, Current())
	got, err := Limit(1 << 20).Apply()
	require.NoError(t, err)
	assert.Equal(t, Limit(1<<20), got)
	assert.Equal(t, Limit(1<<20), Current())
	assert.False(t, Dumping(os.Getpid()))
}

func TestWorkingDir(t *testing.T) {
	d, r := WorkingDir("/srv/x", "", false)
	assert.Equal(t, [2]string{"/srv/x", "/"}, [2]string{d, r})
	d, r = WorkingDir("/srv/x", "/var/empty", false)
	assert.Equal(t, [2]string{"/", "/var/empty"}, [2]string{d, r})
	d, r = WorkingDir("/srv/x", "", true)
	assert.Equal(t, [2]string{"/", "/"}, [2]string{d, r})
}

// systemd-coredump is asked by pid; a stand-in coredumpctl answers here.
func TestSystemdCoredumpIsAskedByPID(t *testing.T) {
	bin := t.TempDir()
	asked := filepath.Join(bin, "asked")
	script := "#!/bin/sh\necho \"$@\" >> " + asked + "\n[ -e " + asked + ".2 ] && echo 'Wed 2026-12-02 16:00:00 UTC 77 0 0 SIGSEGV present /usr/libexec/qemu-system-i386 1M'\ntouch " + asked + ".2\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "coredumpctl"), []byte(script), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	c := Collector{ProcSys: fakeProcSys(t, "|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", "0", "0"), HandlerWait: 5 * time.Second}
	cr := c.Collect(Launch{LogDir: t.TempDir(), Limit: Limit(Unlimited), PID: 77}, syscall.SIGSEGV, true)
	assert.Equal(t, "/lib/systemd/systemd-coredump", cr.Handler)
	assert.Equal(t, "kept by systemd-coredump: coredumpctl gdb 77 (or coredumpctl dump 77 -o FILE)", cr.Note)
	b, err := os.ReadFile(asked)
	require.NoError(t, err)
	assert.Equal(t, "--no-pager --no-legend list 77\n--no-pager --no-legend list 77\n", string(b), "asked again until it listed the core")
}
