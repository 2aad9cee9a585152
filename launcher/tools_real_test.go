package launcher

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/qmp"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var toolLogRE = regexp.MustCompile(`(/\S+/dmlaunch-(?:strace|memcheck)-5-\d{8}T\d{6}Z(?:-\d+)?\.log)`)

func TestStraceModeTracesQEMUFromItsFirstInstruction(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "strace")
	const line = "traced guest"
	disk := bootImage(t, guest.Options{Message: line + "\r\n", Exit: true, ExitStatus: 5})
	s := startSupervised(t, paths[0], []string{"DMLAUNCH_DEBUG=strace"}, guestArgs("traced", disk))
	assert.Equal(t, guest.ExitStatus(5), s.wait(t, 120*time.Second), "QEMU's exit status comes out of the launcher")
	log := s.stderr.String()
	assert.Contains(t, log, "strace -f -tt traces QEMU (pid ")
	assert.NotContains(t, log, "waiting for a debugger", "strace released the hold")
	m := toolLogRE.FindStringSubmatch(log)
	require.NotNil(t, m, "the log line names the strace file:\n%s", log)
	trace, err := os.ReadFile(m[1])
	require.NoError(t, err)
	text := string(trace)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	require.Greater(t, len(lines), 100)
	// The first call is the dynamic loader's: the trace starts at QEMU's
	// first instruction, not somewhere later.
	assert.Regexp(t, `^\d+ +\d\d:\d\d:\d\d\.\d{6} brk\(NULL\)`, lines[0])
	assert.Contains(t, text, "openat(", "QEMU's system calls are in the file")
	assert.Regexp(t, `\+\+\+ exited with 11 \+\+\+\s*$`, text)
	assert.Regexp(t, `\d+ bytes of strace output in `+regexp.QuoteMeta(m[1]), log)
	b, err := os.ReadFile(ConsoleLogPath(s.logDir, 5))
	require.NoError(t, err)
	assert.Contains(t, string(b), line, "the guest's line arrives")
}

func TestStraceRefusesAnotherTracer(t *testing.T) {
	for _, modes := range []string{"strace,gdb", "gdb-wait,strace", "memcheck,gdb", "strace,memcheck"} {
		t.Run(modes, func(t *testing.T) {
			r := launch(t, run{args: []string{"-xen-domid", "5", "-machine", "xenfv"}, env: []string{"DMLAUNCH_DEBUG=" + modes}})
			assert.Equal(t, ExitBadInput, r.status)
			assert.False(t, r.started, "QEMU never started")
			assert.Contains(t, r.stderr, "asks for both ")
			assert.Contains(t, r.stderr, "choose one")
		})
	}
}

func TestMemcheckModeServesVgdb(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "valgrind", "vgdb", "gdb")
	qemu, gdb := paths[0], paths[3]
	const line = "under memcheck"
	disk := bootImage(t, guest.Options{Message: line + "\r\n"}) // halts: runs until told
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=memcheck"}, guestArgs("checked", disk))
	s.waitLog(t, "runs under valgrind memcheck")
	log := s.stderr.String()
	assert.Contains(t, log, "the toolstack destroys the domain if QEMU has not started within 1m0s")
	m := toolLogRE.FindStringSubmatch(log)
	require.NotNil(t, m, "the log line names the memcheck log:\n%s", log)
	rec := s.record(t)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(rec.ConsoleLog)
		return strings.Contains(string(b), line)
	}, 240*time.Second, 50*time.Millisecond, "the guest boots under valgrind")

	// The launcher's child is QEMU itself, under valgrind's tool.
	exe, err := os.Readlink("/proc/" + strconv.Itoa(rec.QEMUPID) + "/exe")
	require.NoError(t, err)
	assert.Contains(t, exe, "memcheck")

	// A gdb through the debug port reaches valgrind's gdbserver via vgdb.
	out := gdbBatch(t, gdb, "target remote "+rec.GDB, "info inferiors", "monitor leak_check summary", "detach")
	assert.Contains(t, out, "LEAK SUMMARY", "monitor commands answer through vgdb")
	assert.Contains(t, out, "definitely lost:")
	s.waitLog(t, "vgdb --pid=")

	// The guest ends QEMU through isa-debug-exit; its status comes out.
	mon, err := qmp.Dial(rec.QMP, qmp.Options{Timeout: 60 * time.Second})
	require.NoError(t, err)
	_, _ = mon.HumanMonitorCommand("o /b 0xf4 5")
	mon.Close()
	assert.Equal(t, guest.ExitStatus(5), s.wait(t, 120*time.Second))
	b, err := os.ReadFile(m[1])
	require.NoError(t, err)
	assert.Contains(t, string(b), "Memcheck, a memory error detector")
	assert.Contains(t, string(b), "HEAP SUMMARY")
	assert.Regexp(t, `\d+ bytes of memcheck output in `+regexp.QuoteMeta(m[1]), s.stderr.String())
}

// valgrind catches a crash itself and writes its own core beside its log:
// the launcher keeps that one as it keeps a kernel's.
func TestMemcheckCrashKeepsValgrindsCore(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, "valgrind", "vgdb", "gdb")
	log, status, _, s := crashGuestWithin(t, paths[0], ModeMemcheck, syscall.SIGSEGV, 240*time.Second)
	assert.Equal(t, 128+int(syscall.SIGSEGV), status)
	m := corePathRE.FindStringSubmatch(log)
	require.NotNil(t, m, "the log line names the core:\n%s", log)
	assert.Equal(t, s.logDir, filepath.Dir(m[1]))
	info, err := coredump.ReadCore(m[1])
	require.NoError(t, err)
	assert.True(t, info.Whole())
	assert.Contains(t, log, "backtrace: ")
}
