package qmp

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeQEMU speaks just enough QMP: a greeting, capabilities, an event
// between replies, and a human-monitor-command reply of any size.
func fakeQEMU(t *testing.T, reply string) string {
	path := filepath.Join(t.TempDir(), "qmp")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		enc := json.NewEncoder(conn)
		_ = enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
		dec := json.NewDecoder(bufio.NewReader(conn))
		for {
			var req struct {
				Execute   string            `json:"execute"`
				Arguments map[string]string `json:"arguments"`
			}
			if dec.Decode(&req) != nil {
				return
			}
			_ = enc.Encode(map[string]any{"event": "RTC_CHANGE", "data": map[string]int{"offset": 0}})
			switch req.Execute {
			case "qmp_capabilities":
				_ = enc.Encode(map[string]any{"return": map[string]any{}})
			case "human-monitor-command":
				if req.Arguments["command-line"] == "bogus" {
					_ = enc.Encode(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "unknown command: 'bogus'"}})
					continue
				}
				_ = enc.Encode(map[string]any{"return": reply})
			}
		}
	}()
	return path
}

func TestHumanMonitorCommandLargeReply(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 16*1024) + "\r\n" // 256 KiB
	m, err := Dial(fakeQEMU(t, big), 5*time.Second)
	require.NoError(t, err)
	defer m.Close()
	out, err := m.HumanMonitorCommand("info mtree")
	require.NoError(t, err)
	assert.Equal(t, big, out, "replies over 64 KiB arrive whole")

	_, err = m.HumanMonitorCommand("bogus")
	var qe *Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "GenericError", qe.Class)
}

func TestDialRefusesNonQMP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("{\"hello\": 1}\n"))
			c.Close()
		}
	}()
	_, err = Dial(path, 2*time.Second)
	assert.ErrorIs(t, err, ErrNotQMP)
}
