// Package qmp is a small client for QEMU's machine protocol, enough to
// run human monitor commands over the launcher's socket.
package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Monitor runs commands on a QEMU.
type Monitor interface {
	// Execute runs a QMP command and returns its "return" value.
	Execute(command string, args any) (json.RawMessage, error)
	// HumanMonitorCommand runs a human monitor (HMP) command line.
	HumanMonitorCommand(line string) (string, error)
	Close() error
}

// Error is an error reply from QEMU.
type Error struct {
	Class, Desc string
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// ErrNotQMP is returned when the socket does not greet like QEMU.
var ErrNotQMP = errors.New("not a QMP socket: no QMP greeting")

type client struct {
	conn net.Conn
	// A json.Decoder, not a line scanner: replies have no size limit
	// (a bufio.Scanner gives up at 64 KiB).
	dec *json.Decoder
	enc *json.Encoder
}

type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event  string          `json:"event"`
}

// Dial connects to a QMP unix socket and negotiates capabilities.
func Dial(path string, timeout time.Duration) (Monitor, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, dec: json.NewDecoder(conn), enc: json.NewEncoder(conn)}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var greeting message
	if err := c.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("%w (%v)", ErrNotQMP, err)
		}
		return nil, ErrNotQMP
	}
	if _, err := c.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *client) Execute(command string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	if err := c.enc.Encode(req); err != nil {
		return nil, err
	}
	for {
		var m message
		if err := c.dec.Decode(&m); err != nil {
			return nil, err
		}
		switch {
		case m.Event != "":
			continue // asynchronous events are not replies
		case m.Error != nil:
			return nil, m.Error
		case m.Return != nil:
			return m.Return, nil
		}
	}
}

func (c *client) HumanMonitorCommand(line string) (string, error) {
	ret, err := c.Execute("human-monitor-command", map[string]string{"command-line": line})
	if err != nil {
		return "", err
	}
	var out string
	if err := json.Unmarshal(ret, &out); err != nil {
		return "", fmt.Errorf("human-monitor-command reply: %w", err)
	}
	return out, nil
}

func (c *client) Close() error { return c.conn.Close() }
