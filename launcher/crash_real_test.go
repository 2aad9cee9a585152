package launcher

import (
	"encoding/json"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// needCoreFiles skips (or fails under CI) where the kernel hands cores to a
// handler: these tests look at the file the kernel writes.
func needCoreFiles(t *testing.T) {
	pat, err := coredump.ReadPattern("/proc/sys")
	require.NoError(t, err)
	if pat.Kind() != coredump.ToFile {
		t.Skipf("kernel.core_pattern %q does not write core files", pat.Raw)
	}
}

var corePathRE = regexp.MustCompile(`dumped core: (\S+) \(`)

// crashGuest boots the built-in guest in a debug mode, waits for its
// console line, kills QEMU with sig and returns the launcher's log and
// exit status, and how long the crash line took.
func crashGuest(t *testing.T, qemu, mode string, sig syscall.Signal, env ...string) (log string, status int, took time.Duration, s *supervised) {
	return crashGuestWithin(t, qemu, mode, sig, 30*time.Second, env...)
}

// crashGuestWithin is crashGuest with a longer wait for the guest's line
// (memcheck is slow).
func crashGuestWithin(t *testing.T, qemu, mode string, sig syscall.Signal, boot time.Duration, env ...string) (log string, status int, took time.Duration, s *supervised) {
	const line = "about to crash"
	disk := bootImage(t, guest.Options{Message: line + "\r\n"})
	s = startSupervised(t, qemu, append([]string{"DMLAUNCH_DEBUG=" + mode}, env...), guestArgs("crash guest", disk))
	rec := s.record(t)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(rec.ConsoleLog)
		return strings.Contains(string(b), line)
	}, boot, 10*time.Millisecond, "the guest runs")
	start := time.Now()
	require.NoError(t, syscall.Kill(rec.QEMUPID, sig))
	want := "was killed by " + coredump.SignalName(sig)
	require.Eventually(t, func() bool { return strings.Contains(s.stderr.String(), want) }, 60*time.Second, time.Millisecond)
	took = time.Since(start)
	status = s.wait(t, 60*time.Second)
	return s.stderr.String(), status, took, s
}

func TestCrashedQEMUKeepsItsCore(t *testing.T) {
	needCoreFiles(t)
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	for _, mode := range []string{ModeConsole, ModeGDB} {
		for _, sig := range []syscall.Signal{syscall.SIGSEGV, syscall.SIGABRT} {
			t.Run(mode+"/"+coredump.SignalName(sig), func(t *testing.T) {
				log, status, took, s := crashGuest(t, qemu, mode, sig)
				assert.Equal(t, 128+int(sig), status, "the launcher exits as QEMU did")
				m := corePathRE.FindStringSubmatch(log)
				require.NotNil(t, m, "the log line names the core:\n%s", log)
				core := m[1]
				assert.Equal(t, s.logDir, filepath.Dir(core), "the core is beside the console log")
				assert.True(t, strings.HasPrefix(filepath.Base(core), "dmlaunch-crash-5-crash_guest-"), core)
				assert.Contains(t, log, "was killed by "+coredump.SignalName(sig)+" ("+sig.String()+") and dumped core: "+core)
				assert.Contains(t, log, "on disk, whole)")
				info, err := coredump.ReadCore(core)
				require.NoError(t, err)
				assert.True(t, info.Whole())
				ents, _ := os.ReadDir(filepath.Dir(s.state))
				for _, e := range ents {
					assert.False(t, strings.HasPrefix(e.Name(), "core"), "no core left where the kernel wrote it: %s", e.Name())
				}

				// The backtrace of every thread is in the log, the main
				// thread's in QEMU's main loop.
				bt := 0
				for _, l := range strings.Split(log, "\n") {
					if strings.Contains(l, ": backtrace: ") {
						bt++
					}
				}
				assert.Greater(t, bt, 10)
				assert.Regexp(t, `backtrace: #\d+ +0x[0-9a-f]+ in main_loop_wait \(\)`, log)
				assert.Contains(t, log, "backtrace: Thread 1 ")

				// The crash record, as dmctl reads it.
				recs, _ := filepath.Glob(filepath.Join(s.logDir, "dmlaunch-crash-5-*.json"))
				require.Len(t, recs, 1)
				b, err := os.ReadFile(recs[0])
				require.NoError(t, err)
				var cr coredump.Crash
				require.NoError(t, json.Unmarshal(b, &cr))
				assert.Equal(t, core, cr.Core)
				assert.Equal(t, coredump.SignalName(sig), cr.Signal)
				assert.Equal(t, mode, cr.Mode)
				assert.Equal(t, bt, cr.Backtrace)
				assert.NotEmpty(t, cr.BuildID)

				// gdb reads the core whole, with the real binary.
				cmd := exec.Command(gdb, "-nx", "-batch", "-ex", "bt", qemu, core)
				cmd.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "%s", out)
				assert.NotContains(t, string(out), "past end of file")
				assert.NotContains(t, string(out), "is truncated")
				assert.Contains(t, string(out), "Program terminated with signal "+coredump.SignalName(sig))
				assert.Contains(t, string(out), "in qemu_main_loop ()")
				t.Logf("figures: %s in %s mode: core %d bytes (%d on disk), crash to log line %v, backtrace %d lines",
					coredump.SignalName(sig), mode, info.Size, info.Allocated, took.Round(time.Millisecond), bt)
			})
		}
	}
}

func TestCoreLimitZeroKeepsNoCore(t *testing.T) {
	needCoreFiles(t)
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	log, status, _, s := crashGuest(t, qemu, ModeConsole, syscall.SIGSEGV, "DMLAUNCH_CORE_LIMIT=0")
	assert.Equal(t, 128+int(syscall.SIGSEGV), status)
	assert.Contains(t, log, "was killed by SIGSEGV (segmentation fault); no core: cores are off: the core size limit is 0 (DMLAUNCH_CORE_LIMIT=0)")
	assert.NotContains(t, log, "backtrace:")
	cores, _ := filepath.Glob(filepath.Join(s.logDir, "*.core"))
	assert.Empty(t, cores)
	ents, _ := os.ReadDir(filepath.Dir(s.state))
	for _, e := range ents {
		assert.False(t, strings.HasPrefix(e.Name(), "core"), "no core written: %s", e.Name())
	}
}

func TestCrashUnderAnAttachedDebugger(t *testing.T) {
	needCoreFiles(t)
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	disk := bootImage(t, guest.Options{Message: "attached\r\n"})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("attached", disk))
	rec := s.record(t)
	s.waitLog(t, "gdb: target remote")
	// gdb attaches and lets QEMU run; the signal stops it in gdb, which
	// then detaches, passing the signal on.
	g := exec.Command(gdb, "-nx", "-batch", "-ex", "set sysroot /", "-ex", "target remote "+rec.GDB, "-ex", "continue", "-ex", "detach", qemu)
	g.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	var out realtest.SyncBuffer
	g.Stdout, g.Stderr = &out, &out
	require.NoError(t, g.Start())
	require.Eventually(t, func() bool {
		tracer, state := procStatus(t, rec.QEMUPID)
		return tracer != 0 && state != 't'
	}, 30*time.Second, 10*time.Millisecond, "QEMU runs under the debugger")
	time.Sleep(200 * time.Millisecond) // gdb's "continue" reaches gdbserver
	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGSEGV))
	require.NoError(t, g.Wait(), "%s", out.String())
	assert.Contains(t, out.String(), "received signal SIGSEGV", "the debugger sees the signal")
	assert.Contains(t, out.String(), "detached]")
	assert.Equal(t, 128+int(syscall.SIGSEGV), s.wait(t, 60*time.Second))
	assert.Regexp(t, `was killed by SIGSEGV \(segmentation fault\) and dumped core: \S+ \(.*whole\)`, s.stderr.String())
	assert.Contains(t, s.stderr.String(), "backtrace: Thread 1 ")
}

// A debugger that disconnects (killed) after QEMU stopped on the signal:
// gdbserver detaches, and the signal still ends QEMU with its core.
func TestCrashUnderADebuggerThatDisconnects(t *testing.T) {
	needCoreFiles(t)
	paths := realtest.Need(t, realtest.QEMUTCG, "gdbserver", "gdb")
	qemu, gdb := paths[0], paths[2]
	disk := bootImage(t, guest.Options{Message: "disconnects\r\n"})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=gdb"}, guestArgs("disconnects", disk))
	rec := s.record(t)
	s.waitLog(t, "gdb: target remote")
	// gdb reads its commands from a pipe the test holds open, so that it
	// is still connected when it is killed.
	g := exec.Command(gdb, "-nx", "-q", "-ex", "set sysroot /", "-ex", "target remote "+rec.GDB, "-ex", "continue", qemu)
	g.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	stdin, err := g.StdinPipe()
	require.NoError(t, err)
	defer stdin.Close()
	var out realtest.SyncBuffer
	g.Stdout, g.Stderr = &out, &out
	require.NoError(t, g.Start())
	require.Eventually(t, func() bool {
		tracer, state := procStatus(t, rec.QEMUPID)
		return tracer != 0 && state != 't'
	}, 30*time.Second, 10*time.Millisecond, "QEMU runs under the debugger")
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, syscall.Kill(rec.QEMUPID, syscall.SIGSEGV))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "received signal SIGSEGV") }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, g.Process.Kill()) // the debugger vanishes
	_ = g.Wait()
	assert.Equal(t, 128+int(syscall.SIGSEGV), s.wait(t, 60*time.Second))
	assert.Regexp(t, `was killed by SIGSEGV \(segmentation fault\) and dumped core: \S+ \(.*whole\)`, s.stderr.String())
}
