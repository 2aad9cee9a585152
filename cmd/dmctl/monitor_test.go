package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/qmp"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// standIn is a QMP server that misbehaves as told, on a fresh socket.
func standIn(t *testing.T, handle func(conn net.Conn, dec *json.Decoder)) string {
	return realtest.UnixServer(t, func(conn net.Conn) {
		_ = json.NewEncoder(conn).Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
		handle(conn, json.NewDecoder(conn))
	})
}

type qmpRequest struct {
	Execute   string            `json:"execute"`
	Arguments map[string]string `json:"arguments"`
	ID        any               `json:"id"`
}

// negotiate answers qmp_capabilities and returns the next request.
func negotiate(conn net.Conn, dec *json.Decoder) (qmpRequest, bool) {
	var req qmpRequest
	if dec.Decode(&req) != nil {
		return req, false
	}
	_ = json.NewEncoder(conn).Encode(map[string]any{"return": map[string]any{}, "id": req.ID})
	err := dec.Decode(&req)
	return req, err == nil
}

// quiet reads and never answers, until the client goes.
func quiet(conn net.Conn) { _, _ = io.Copy(io.Discard, conn) }

// monitorRun runs the dmctl binary and returns its stderr, status, the
// time it took and its peak memory.
func monitorRun(t *testing.T, stdin string, args ...string) (stdout, stderr string, status int, took time.Duration, maxRSSKiB int64) {
	t.Helper()
	cmd := exec.Command(dmctlBin, args...)
	cmd.Env = []string{"DMLAUNCH_CONFIG="}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	var exit *exec.ExitError
	if err != nil {
		require.True(t, errors.As(err, &exit), "%v", err)
		status = exit.ExitCode()
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxRSSKiB = ru.Maxrss
	}
	return out.String(), errb.String(), status, took, maxRSSKiB
}

// dmctl monitor ends within its timeout, with a message that says what
// happened and the status that says whether the command may have run.
func TestMonitorCannotHang(t *testing.T) {
	const timeout = time.Second
	tests := []struct {
		name   string
		handle func(conn net.Conn, dec *json.Decoder)
		status int
		want   []string
	}{
		{"quiet after the greeting", func(conn net.Conn, dec *json.Decoder) { quiet(conn) }, exitMonitorNotSent,
			[]string{"capabilities negotiation: no answer within 1s (--timeout raises it); nothing was sent"}},
		{"quiet after the command", func(conn net.Conn, dec *json.Decoder) {
			if _, ok := negotiate(conn, dec); ok {
				quiet(conn)
			}
		}, exitMonitorNoReply, []string{`"human-monitor-command": no answer within 1s (--timeout raises it); the command was sent and may have run`}},
		{"an endless reply", func(conn net.Conn, dec *json.Decoder) {
			if _, ok := negotiate(conn, dec); !ok {
				return
			}
			_, _ = conn.Write([]byte(`{"return": "`))
			chunk := []byte(strings.Repeat("info mtree ", 8<<10))
			for {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}, exitMonitorNoReply, []string{`"human-monitor-command": the reply is over the 16 MiB limit (--max-reply raises it); the command was sent and may have run`}},
		{"an endless reply, a small cap", func(conn net.Conn, dec *json.Decoder) {
			if _, ok := negotiate(conn, dec); !ok {
				return
			}
			_, _ = conn.Write([]byte(`{"return": "`))
			chunk := []byte(strings.Repeat("x", 4<<10))
			for {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}, exitMonitorNoReply, []string{`"human-monitor-command": the reply is over the 64 KiB limit (--max-reply raises it)`}},
		{"an endless reply, slowly", func(conn net.Conn, dec *json.Decoder) {
			if _, ok := negotiate(conn, dec); !ok {
				return
			}
			_, _ = conn.Write([]byte(`{"return": "`))
			for {
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}, exitMonitorNoReply, []string{"no answer within 1s"}},
		{"closes after the command", func(conn net.Conn, dec *json.Decoder) { negotiate(conn, dec) }, exitMonitorNoReply,
			[]string{`"human-monitor-command": QEMU closed the connection; the command was sent and may have run`}},
		{"an HMP error", func(conn net.Conn, dec *json.Decoder) {
			if req, ok := negotiate(conn, dec); ok {
				_ = json.NewEncoder(conn).Encode(map[string]any{"return": "Error: Device 'nope' not found\r\n", "id": req.ID})
			}
		}, exitMonitorCommandFailed, []string{"dmctl monitor: info status: Error: Device 'nope' not found\n"}},
		{"a QMP error", func(conn net.Conn, dec *json.Decoder) {
			if req, ok := negotiate(conn, dec); ok {
				_ = json.NewEncoder(conn).Encode(map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "no"}, "id": req.ID})
			}
		}, exitMonitorCommandFailed, []string{"dmctl monitor: info status: CommandNotFound: no\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := standIn(t, tt.handle)
			args := []string{"monitor", "--qmp", path, "--timeout", timeout.String(), "7", "-c", "info status"}
			timeout := timeout
			switch {
			case strings.Contains(tt.name, "small cap"):
				args = append(args, "--max-reply", "64K")
				fallthrough
			case tt.name == "an endless reply":
				// The cap, not the clock, ends these, even on a loaded
				// machine.
				timeout = 30 * time.Second
				args[4] = timeout.String()
			}
			_, stderr, status, took, rss := monitorRun(t, "", args...)
			assert.Equal(t, tt.status, status, "%s", stderr)
			for _, w := range tt.want {
				assert.Contains(t, stderr, w)
			}
			assert.Less(t, took, timeout+5*time.Second, "ends within the timeout")
			assert.Less(t, rss, int64(256<<10), "peak memory stays far from the stream's size (KiB)")
			t.Logf("status %d after %v, peak %d KiB: %s", status, took.Round(time.Millisecond), rss, strings.TrimSpace(stderr))
		})
	}
}

// A script stops at the first broken exchange (a later reply could be taken
// for the next command's) but goes on past commands QEMU refused.
func TestMonitorScriptStatus(t *testing.T) {
	path := standIn(t, func(conn net.Conn, dec *json.Decoder) {
		req, ok := negotiate(conn, dec)
		for ok {
			reply := "fine\r\n"
			switch req.Arguments["command-line"] {
			case "bogus":
				reply = "unknown command: 'bogus'\r\n"
			case "hang":
				quiet(conn)
				return
			}
			_ = json.NewEncoder(conn).Encode(map[string]any{"return": reply, "id": req.ID})
			ok = dec.Decode(&req) == nil
		}
	})
	stdout, stderr, status, _, _ := monitorRun(t, "info a\nbogus\ninfo b\n", "monitor", "--qmp", path, "--timeout", "1s", "7")
	assert.Equal(t, exitMonitorCommandFailed, status)
	assert.Equal(t, "fine\nfine\n", stdout)
	assert.Equal(t, "dmctl monitor: bogus: unknown command: 'bogus'\n", stderr)

	stdout, stderr, status, _, _ = monitorRun(t, "info a\nbogus\nhang\ninfo b\n", "monitor", "--qmp", path, "--timeout", "1s", "7")
	assert.Equal(t, exitMonitorNoReply, status)
	assert.Equal(t, "fine\n", stdout, "nothing after the command that hung")
	assert.Contains(t, stderr, `"human-monitor-command": no answer within 1s`)
}

func TestMonitorUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"monitor", "5", "--timeout", "0s"}, "--timeout must be more than 0"},
		{[]string{"monitor", "5", "--timeout", "soon"}, `invalid argument "soon" for "--timeout"`},
		{[]string{"monitor", "5", "--max-reply", "lots"}, `--max-reply: "lots" is not a size`},
		{[]string{"monitor", "5", "--max-reply", "0"}, `--max-reply: "0" is not a size`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, status := dmctl(t, append([]string{"--state-dir", t.TempDir()}, tt.args...)...)
			assert.Equal(t, exitUsage, status)
			assert.Contains(t, stderr, tt.want)
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "512K": 512 << 10, "16M": 16 << 20, "1g": 1 << 30, "2MiB": 2 << 20} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "M", "1T", "99999999999G"} {
		_, err := parseSize(in)
		assert.Error(t, err, in)
	}
}

func TestHMPTextEscapesControlCharacters(t *testing.T) {
	tests := []struct{ in, want string }{
		{"VM status: running\r\n", "VM status: running\n"},
		{"a\tb\r\nc\r\n", "a\tb\nc\n"},
		{"web\x1b]0;owned\x07\r\n", `web\x1b]0;owned\x07` + "\n"},
		{"bare\rcr\r\n", `bare\rcr` + "\n"},
		{"\u202eevil\r\n", `\xe2\x80\xaeevil` + "\n"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, hmpText(tt.in), "%q", tt.in)
	}
}

// The interactive shell does not hang either: a QEMU that stops answering
// mid-session ends it with status 4, the terminal restored.
func TestMonitorShellEndsWhenQEMUStopsAnswering(t *testing.T) {
	path := standIn(t, func(conn net.Conn, dec *json.Decoder) {
		req, ok := negotiate(conn, dec)
		for ok {
			if req.Arguments["command-line"] == "info status" {
				quiet(conn)
				return
			}
			_ = json.NewEncoder(conn).Encode(map[string]any{"return": "help text\r\n", "id": req.ID})
			ok = dec.Decode(&req) == nil
		}
	})
	tm := startTerminal(t, []string{"HOME=" + t.TempDir()}, "monitor", "--qmp", path, "--timeout", "1s", "7")
	pos := tm.expect(t, 0, "(qemu) ")
	tm.typeText(t, "info status\r")
	tm.expect(t, pos, `"human-monitor-command": no answer within 1s (--timeout raises it); the command was sent and may have run`)
	assert.Equal(t, exitMonitorNoReply, tm.exitStatus(t))
	slave, err := os.OpenFile(ptsName(t, tm.master), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer slave.Close()
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	require.NoError(t, err)
	assert.NotZero(t, after.Lflag&unix.ECHO, "echo is back")
}

// A gdb-wait launch holds QEMU frozen before its first instruction: dmctl
// monitor says so at once, with status 3.
func TestMonitorReportsAGDBWaitHold(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG, "gdbserver")[0]
	state := filepath.Join(t.TempDir(), "state")
	img, err := guest.BootSector(guest.Options{Message: "never runs\r\n"})
	require.NoError(t, err)
	disk := filepath.Join(t.TempDir(), "boot.img")
	require.NoError(t, os.WriteFile(disk, img, 0o644))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := l.Addr().(*net.TCPAddr).Port - 22
	l.Close()
	cmd := exec.Command(dmlaunchBin, "-name", "waiter", "-machine", "pc", "-accel", "tcg", "-display", "none",
		"-nodefaults", "-no-user-config", "-serial", "pty", "-drive", "file="+disk+",format=raw,if=floppy")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=" + qemu, "DMLAUNCH_DEBUG=gdb-wait",
		"DMLAUNCH_STATE_DIR=" + state, "DMLAUNCH_LOG_DIR=" + filepath.Join(t.TempDir(), "log"),
		"XEN_DOMAIN_ID=22", fmt.Sprintf("DMLAUNCH_GDB_LISTEN=127.0.0.1:%d", base)}
	launcherLog := &realtest.SyncBuffer{}
	cmd.Stderr = launcherLog
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGHUP); _ = cmd.Wait() })
	require.Eventually(t, func() bool { return strings.Contains(launcherLog.String(), "stopped before its first instruction") },
		30*time.Second, 10*time.Millisecond)

	_, stderr, status, took, _ := monitorRun(t, "", "--state-dir", state, "monitor", "22", "-c", "info status")
	assert.Equal(t, exitMonitorNotSent, status)
	assert.Regexp(t, `QEMU \(pid \d+\) is held frozen in cgroup \S+, waiting for a debugger \(gdb-wait\): its monitor answers once a debugger has let it start; nothing was sent`, stderr,
		"launcher log:\n%s", launcherLog.String())
	assert.Less(t, took, qmp.DefaultTimeout, "at once, not after the timeout")
}
