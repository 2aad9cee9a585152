package console

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func readFor(t *testing.T, f *os.File, want int) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		require.NoError(t, f.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		n, _ := f.Read(buf)
		got = append(got, buf[:n]...)
	}
	return got
}

// logf collects what the relay reports to the toolstack's log.
type logf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logf) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

func (l *logf) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func openQEMUSide(t *testing.T, c *Console) *os.File {
	qemu, err := os.OpenFile(c.QEMUPath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	return qemu
}

var headerLine = regexp.MustCompile(`^=== dmlaunch \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: domain 5 \(web\\n1\), launcher pid 4242: console log starts ===\n`)

func TestRelayKeepsEveryByteAndCarriesInput(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	var reports logf
	c, err := Open(logPath, Launch{Domid: 5, Name: "web\n1", LauncherPID: 4242, Logf: reports.printf})
	require.NoError(t, err)
	defer c.Close()
	assert.Regexp(t, `^/dev/pts/\d+$`, c.QEMUPath)
	assert.Regexp(t, `^/dev/pts/\d+$`, c.UserPath)
	assert.NotEqual(t, c.QEMUPath, c.UserPath)

	// QEMU's side, as QEMU opens it.
	qemu := openQEMUSide(t, c)
	// Every byte value, and more than a pty buffer holds, with nobody on
	// the users' pty.
	var out bytes.Buffer
	for i := 0; out.Len() < 256*1024; i++ {
		out.WriteByte(byte(i))
	}
	_, err = qemu.Write(out.Bytes())
	require.NoError(t, err)
	select {
	case <-c.FirstByte():
	case <-time.After(5 * time.Second):
		t.Fatal("no first byte")
	}

	// A user attaches later and types: it reaches QEMU.
	user, err := os.OpenFile(c.UserPath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer user.Close()
	_, err = user.Write([]byte("typed\r"))
	require.NoError(t, err)
	assert.Equal(t, "typed\r", string(readFor(t, qemu, 6)), "input goes to QEMU unchanged (raw mode: no CR/LF mapping)")

	// QEMU goes away; the log holds a header line (the name escaped), then
	// everything, byte for byte.
	qemu.Close()
	c.Drain()
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	header := headerLine.Find(b)
	require.NotNil(t, header, "%q", b[:min(len(b), 200)])
	assert.True(t, bytes.Equal(out.Bytes(), b[len(header):]), "log has %d bytes after the header, want %d, identical", len(b)-len(header), out.Len())
	assert.True(t, bytes.Equal(out.Bytes(), Strip(b)))
	assert.Equal(t, int64(out.Len()), c.Logged())
	assert.Equal(t, fmt.Sprintf("%d console bytes in %s", out.Len(), logPath), c.Summary())
	assert.Empty(t, reports.all())
}

func TestEachLaunchStartsWithAHeader(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	require.NoError(t, os.WriteFile(logPath, []byte("earlier run, no newline at the end"), 0o640))
	for _, run := range []string{"first run\n", "second run"} {
		c, err := Open(logPath, Launch{Domid: 5, Name: "web1", LauncherPID: 4242})
		require.NoError(t, err)
		qemu := openQEMUSide(t, c)
		_, _ = io.WriteString(qemu, run)
		<-c.FirstByte()
		qemu.Close()
		c.Drain()
		require.NoError(t, c.Close())
	}
	b, _ := os.ReadFile(logPath)
	assert.Regexp(t, `^earlier run, no newline at the end\n=== dmlaunch \S+: domain 5 \(web1\), launcher pid 4242: console log starts ===\nfirst run\n\n=== dmlaunch \S+: domain 5 \(web1\), launcher pid 4242: console log starts ===\nsecond run$`, string(b))
	assert.Equal(t, "earlier run, no newline at the endfirst run\nsecond run", string(Strip(b)), "Strip gives back exactly the guests' bytes")
	fi, _ := os.Stat(logPath)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
}

// A log that cannot be written: the failure is reported once, every byte
// is counted as kept or lost, and the summary says both.
func TestWriteErrorsAreCountedAndReportedOnce(t *testing.T) {
	var reports logf
	c, err := Open("/dev/full", Launch{Domid: 5, Name: "full", LauncherPID: 1, Logf: reports.printf})
	require.NoError(t, err)
	defer c.Close()
	qemu := openQEMUSide(t, c)
	total := 0
	for i := 0; i < 50; i++ {
		n, err := io.WriteString(qemu, strings.Repeat("x", 1000)+"\n")
		require.NoError(t, err)
		total += n
	}
	qemu.Close()
	c.Drain()
	lost, lostErr := c.Lost()
	assert.Equal(t, int64(total), lost)
	assert.Zero(t, c.Logged())
	assert.ErrorIs(t, lostErr, unix.ENOSPC)
	assert.Equal(t, []string{"console log /dev/full: write: no space left on device; console bytes are being lost (counted, and reported when QEMU exits)"}, reports.all(),
		"reported once, not once per write")
	assert.Equal(t, fmt.Sprintf("0 console bytes in /dev/full, %d not kept (write: no space left on device)", total), c.Summary())
}

func TestRenamedLogIsReopened(t *testing.T) {
	old := reopenCheckInterval
	reopenCheckInterval = 0
	t.Cleanup(func() { reopenCheckInterval = old })
	dir := t.TempDir()
	logPath := filepath.Join(dir, "console.log")
	c, err := Open(logPath, Launch{Domid: 5, Name: "web1", LauncherPID: 4242})
	require.NoError(t, err)
	defer c.Close()
	qemu := openQEMUSide(t, c)
	_, _ = io.WriteString(qemu, "before\n")
	require.Eventually(t, func() bool { return c.Logged() == 7 }, 5*time.Second, time.Millisecond)
	require.NoError(t, os.Rename(logPath, logPath+".1"))
	_, _ = io.WriteString(qemu, "after\n")
	qemu.Close()
	c.Drain()
	rotated, _ := os.ReadFile(logPath + ".1")
	current, _ := os.ReadFile(logPath)
	assert.Equal(t, "before\n", string(Strip(rotated)))
	assert.Regexp(t, `^=== dmlaunch \S+: domain 5 \(web1\), launcher pid 4242: console log continues after rotation ===\nafter\n$`, string(current))
	assert.Equal(t, fmt.Sprintf("13 console bytes in %s (6 since it was reopened after rotation, 7 in rotated files)", logPath), c.Summary())
}

func TestLaunchTail(t *testing.T) {
	h := func(pid int, event string) string { return Header(time.Unix(0, 0), 5, "x", pid, event) }
	big := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB, over the scan chunk
	tests := []struct {
		name string
		log  string
		n    int64
		want string
	}{
		{"only this launch", h(7, "console log starts") + "hello\n", 100, "hello\n"},
		{"earlier launches before", "old\n" + h(6, "console log starts") + "older guest\n\n" + h(7, "console log starts") + "hello\n", 100, "hello\n"},
		{"n cuts the part", h(7, "console log starts") + "hello world\n", 6, "world\n"},
		{"after rotation", h(7, "console log continues after rotation") + "more\n", 100, "more\n"},
		{"gap markers stay", h(7, "console log starts") + "a\n\n" + h(7, "12 console bytes lost here (write: no space left on device)") + "b\n", 1000,
			"a\n\n" + h(7, "12 console bytes lost here (write: no space left on device)") + "b\n"},
		{"another launch is last", h(7, "console log starts") + "mine\n\n" + h(8, "console log starts") + "theirs\n", 100, ""},
		{"no header: copytruncate kept none", "tail only\n", 100, "tail only\n"},
		{"header far back", "old\n" + h(6, "console log starts") + "x\n\n" + h(7, "console log starts") + big, 100, big[len(big)-100:]},
		{"header far back, whole part", "old\n" + h(6, "console log starts") + "x\n\n" + h(7, "console log starts") + big, 1 << 30, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			require.NoError(t, os.WriteFile(path, []byte(tt.log), 0o600))
			got, err := LaunchTail(path, 7, tt.n)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
	_, err := LaunchTail("/dev/null", 7, 10)
	assert.ErrorContains(t, err, "/dev/null is not a regular file")
}

// A full disk that frees up: the gap is marked in the log where it is, the
// toolstack's log hears of the failure once and of the recovery once, and
// kept plus lost is everything the guest wrote.
func TestFullDiskThatFreesUp(t *testing.T) {
	dir := realtest.Tmpfs(t, 64<<10)
	filler := filepath.Join(dir, "filler")
	logPath := filepath.Join(dir, "console.log")
	var reports logf
	c, err := Open(logPath, Launch{Domid: 5, Name: "web1", LauncherPID: 4242, Logf: reports.printf})
	require.NoError(t, err)
	defer c.Close()
	// Fill what is left.
	f, err := os.Create(filler)
	require.NoError(t, err)
	_, err = f.Write(make([]byte, 64<<10))
	require.ErrorIs(t, err, unix.ENOSPC)
	f.Close()

	qemu := openQEMUSide(t, c)
	line := strings.Repeat("y", 99) + "\n"
	written := 0
	for i := 0; i < 100; i++ {
		n, _ := io.WriteString(qemu, line)
		written += n
	}
	require.Eventually(t, func() bool { lost, _ := c.Lost(); return c.Logged()+lost == int64(written) }, 5*time.Second, time.Millisecond)
	require.NoError(t, os.Remove(filler))
	_, _ = io.WriteString(qemu, "back\n")
	written += 5
	qemu.Close()
	c.Drain()

	lost, _ := c.Lost()
	assert.Positive(t, lost)
	assert.Equal(t, int64(written), c.Logged()+lost, "every byte is kept or counted as lost")
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Regexp(t, fmt.Sprintf(`y\n=== dmlaunch \S+: domain 5 \(web1\), launcher pid 4242: %d console bytes lost here \(write: no space left on device\) ===\nback\n$`, lost), string(b[len(b)-200:]))
	assert.Equal(t, c.Logged(), int64(len(Strip(b))), "the count is what the log holds of the guest's bytes")
	assert.Equal(t, []string{
		"console log " + logPath + ": write: no space left on device; console bytes are being lost (counted, and reported when QEMU exits)",
		fmt.Sprintf("console log %s is written again; %d console bytes were lost (write: no space left on device)", logPath, lost),
	}, reports.all())
}

// A log whose directory went away: the relay keeps writing to the file it
// holds, says so once, and reopens when the directory is back.
func TestRotatedAwayDirectoryIsReportedOnce(t *testing.T) {
	old := reopenCheckInterval
	reopenCheckInterval = 0
	t.Cleanup(func() { reopenCheckInterval = old })
	dir := filepath.Join(t.TempDir(), "log")
	require.NoError(t, os.Mkdir(dir, 0o755))
	logPath := filepath.Join(dir, "console.log")
	var reports logf
	c, err := Open(logPath, Launch{Domid: 5, Name: "web1", LauncherPID: 4242, Logf: reports.printf})
	require.NoError(t, err)
	defer c.Close()
	qemu := openQEMUSide(t, c)
	require.NoError(t, os.Rename(dir, dir+".old"))
	for i := 0; i < 20; i++ {
		_, _ = io.WriteString(qemu, "x")
		require.Eventually(t, func() bool { return c.Logged() == int64(i+1) }, 5*time.Second, time.Millisecond)
	}
	require.NoError(t, os.Mkdir(dir, 0o755))
	_, _ = io.WriteString(qemu, "back\n")
	qemu.Close()
	c.Drain()
	assert.Equal(t, []string{
		"console log " + logPath + " was rotated and cannot be reopened (open: no such file or directory); still writing to the rotated file",
		"console log " + logPath + " reopened",
	}, reports.all())
	held, _ := os.ReadFile(filepath.Join(dir+".old", "console.log"))
	current, _ := os.ReadFile(logPath)
	assert.Equal(t, strings.Repeat("x", 20)+"back\n", string(Strip(held))+string(Strip(current)), "nothing lost on either side")
	lost, _ := c.Lost()
	assert.Zero(t, lost)
}
