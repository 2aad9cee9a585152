package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serve listens on a fresh socket and runs handle for every connection.
func serve(t *testing.T, handle func(conn net.Conn)) string {
	return realtest.UnixServer(t, handle)
}

func greet(conn net.Conn) {
	_ = json.NewEncoder(conn).Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
}

type request struct {
	Execute   string            `json:"execute"`
	Arguments map[string]string `json:"arguments"`
	ID        any               `json:"id"`
}

// fakeQEMU speaks just enough QMP: a greeting, capabilities, an event and
// a stale reply between replies, and a human-monitor-command reply of any
// size.
func fakeQEMU(t *testing.T, reply string) string {
	return serve(t, func(conn net.Conn) {
		greet(conn)
		enc := json.NewEncoder(conn)
		dec := json.NewDecoder(bufio.NewReader(conn))
		for {
			var req request
			if dec.Decode(&req) != nil {
				return
			}
			_ = enc.Encode(map[string]any{"event": "RTC_CHANGE", "data": map[string]int{"offset": 0}})
			_ = enc.Encode(map[string]any{"return": "stale", "id": "someone-else"})
			switch req.Execute {
			case "qmp_capabilities":
				_ = enc.Encode(map[string]any{"return": map[string]any{}, "id": req.ID})
			case "human-monitor-command":
				switch req.Arguments["command-line"] {
				case "bogus-qmp":
					_ = enc.Encode(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "no"}, "id": req.ID})
				case "bogus":
					_ = enc.Encode(map[string]any{"return": "unknown command: 'bogus'\r\n", "id": req.ID})
				default:
					_ = enc.Encode(map[string]any{"return": reply, "id": req.ID})
				}
			}
		}
	})
}

func TestHumanMonitorCommand(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 16*1024) + "\r\n" // 256 KiB
	m, err := Dial(fakeQEMU(t, big), Options{Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, os.Getpid(), m.PeerPID(), "the kernel names the process serving the socket")
	out, err := m.HumanMonitorCommand("info mtree")
	require.NoError(t, err)
	assert.Equal(t, big, out, "replies over 64 KiB arrive whole, past events and other requests' replies")

	_, err = m.HumanMonitorCommand("bogus-qmp")
	var qe *Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "GenericError", qe.Class)

	out, err = m.HumanMonitorCommand("bogus")
	var he *HMPError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, "unknown command: 'bogus'\r\n", out, "the output comes back with the error")
	assert.Equal(t, `QEMU reported an error for "bogus": unknown command: 'bogus'`, err.Error())
}

func TestReplyOverTheCap(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	m, err := Dial(fakeQEMU(t, big), Options{Timeout: 5 * time.Second, MaxReply: 32 << 10})
	require.NoError(t, err)
	defer m.Close()
	_, err = m.HumanMonitorCommand("info mtree")
	var tl *ReplyTooLargeError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, int64(32<<10), tl.Limit)
	var xe *ExchangeError
	require.ErrorAs(t, err, &xe)
	assert.True(t, xe.Sent(), "the command reached QEMU")
	assert.Equal(t, `"human-monitor-command": the reply is over the 32 KiB limit`, err.Error())
}

// Peers that misbehave: each call ends within the timeout (or sooner), at
// the right stage, with the right error.
func TestPeersThatDoNotAnswer(t *testing.T) {
	const timeout = 300 * time.Millisecond
	silent := func(conn net.Conn) { _, _ = conn.Read(make([]byte, 1)); select {} }
	tests := []struct {
		name    string
		handle  func(conn net.Conn)
		stage   string
		want    error
		message string
	}{
		{"no greeting", func(conn net.Conn) { silent(conn) }, StageGreeting, ErrTimeout,
			"QEMU accepted the connection but sent no QMP greeting within 300ms"},
		{"quiet after the greeting", func(conn net.Conn) { greet(conn); silent(conn) }, StageCapabilities, ErrTimeout,
			"capabilities negotiation: no answer within 300ms"},
		{"closes after the greeting", func(conn net.Conn) { greet(conn); _, _ = conn.Read(make([]byte, 1)) }, StageCapabilities, ErrClosed,
			"capabilities negotiation: QEMU closed the connection"},
		{"not QMP", func(conn net.Conn) { _, _ = conn.Write([]byte("{\"hello\": 1}\n")) }, StageGreeting, ErrNotQMP,
			"greeting: not a QMP socket: no QMP greeting"},
		{"not JSON", func(conn net.Conn) { _, _ = conn.Write([]byte("SSH-2.0-OpenSSH\r\n")) }, StageGreeting, ErrNotQMP, ""},
		{"endless greeting", func(conn net.Conn) {
			_, _ = conn.Write([]byte(`{"QMP": "`))
			chunk := []byte(strings.Repeat("a", 4096))
			for {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}, StageGreeting, &ReplyTooLargeError{}, "greeting: the reply is over the 1 MiB limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := timeout
			if tt.name == "endless greeting" {
				timeout = 20 * time.Second // the cap ends it, even on a loaded machine
			}
			start := time.Now()
			_, err := Dial(serve(t, tt.handle), Options{Timeout: timeout, MaxReply: 1 << 20})
			took := time.Since(start)
			var xe *ExchangeError
			require.ErrorAs(t, err, &xe)
			assert.Equal(t, tt.stage, xe.Stage)
			assert.False(t, xe.Sent())
			if tl := (*ReplyTooLargeError)(nil); errors.As(tt.want, &tl) {
				assert.ErrorAs(t, err, &tl)
			} else {
				assert.ErrorIs(t, err, tt.want)
			}
			if tt.message != "" {
				assert.Equal(t, tt.message, err.Error())
			}
			assert.Equal(t, os.Getpid(), xe.PeerPID)
			assert.Less(t, took, timeout+2*time.Second, "ends within the timeout")
		})
	}
}

func TestCommandThatNeverEnds(t *testing.T) {
	const timeout = 300 * time.Millisecond
	answerCapabilities := func(conn net.Conn) *json.Decoder {
		greet(conn)
		dec := json.NewDecoder(conn)
		var req request
		_ = dec.Decode(&req)
		_ = json.NewEncoder(conn).Encode(map[string]any{"return": map[string]any{}, "id": req.ID})
		_ = dec.Decode(&req)
		return dec
	}
	tests := []struct {
		name    string
		handle  func(conn net.Conn)
		check   func(t *testing.T, err error)
		message string
	}{
		{"silent", func(conn net.Conn) { answerCapabilities(conn); select {} },
			func(t *testing.T, err error) { assert.ErrorIs(t, err, ErrTimeout) },
			`"human-monitor-command": no answer within 300ms`},
		{"a reply that trickles forever", func(conn net.Conn) {
			answerCapabilities(conn)
			_, _ = conn.Write([]byte(`{"return": "`))
			for {
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}, func(t *testing.T, err error) { assert.ErrorIs(t, err, ErrTimeout) }, ""},
		{"a reply that floods forever", func(conn net.Conn) {
			answerCapabilities(conn)
			_, _ = conn.Write([]byte(`{"return": "`))
			chunk := []byte(strings.Repeat("a", 64<<10))
			for {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}, func(t *testing.T, err error) {
			// Within the timeout even on a loaded machine: the cap is
			// what ends it.
			var tl *ReplyTooLargeError
			assert.ErrorAs(t, err, &tl)
		}, ""},
		{"closes", func(conn net.Conn) { answerCapabilities(conn) },
			func(t *testing.T, err error) { assert.ErrorIs(t, err, ErrClosed) },
			`"human-monitor-command": QEMU closed the connection`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := timeout
			if strings.Contains(tt.name, "floods") {
				timeout = 20 * time.Second
			}
			m, err := Dial(serve(t, tt.handle), Options{Timeout: timeout, MaxReply: 256 << 10})
			require.NoError(t, err)
			defer m.Close()
			start := time.Now()
			_, err = m.HumanMonitorCommand("info status")
			took := time.Since(start)
			var xe *ExchangeError
			require.ErrorAs(t, err, &xe)
			assert.True(t, xe.Sent(), "the command was sent: it may have run")
			tt.check(t, err)
			if tt.message != "" {
				assert.Equal(t, tt.message, err.Error())
			}
			assert.Less(t, took, timeout+2*time.Second, "ends within the timeout")
		})
	}
}

func TestConnectRefused(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "none"), Options{Timeout: time.Second})
	var xe *ExchangeError
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, StageConnect, xe.Stage)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestIsHMPFailure(t *testing.T) {
	tests := []struct {
		out  string
		want bool
	}{
		{"VM status: running\r\n", false},
		{"", false},
		{"unknown command: 'bogus'\r\n", true},
		{"Error: Device 'nope' not found\r\n", true},
		{"Command 'info foo' not available until machine initialization has completed.\r\n", true},
		{"Command \"xyz\" is not available.\r\n", true},
		{"Expected 'on' or 'off'\r\nTry \"help stop\" for more information\r\n", true},
		{"invalid char 'z' in expression\r\nTry \"help x\" for more information\r\n", true},
		{"the guest printed Error: in the middle\r\n", false},
		{"help text mentions Try \"help info\" for more information in the middle\r\nmore\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			assert.Equal(t, tt.want, IsHMPFailure(tt.out))
		})
	}
}
