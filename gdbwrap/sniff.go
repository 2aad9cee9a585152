package gdbwrap

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// gdbserver attaches (and QEMU stops) as soon as it starts: it is started
// only for a client that has spoken the remote protocol. gdb sends "+"
// and "$qSupported:...#xx" as soon as it connects; a port scanner, an
// HTTP client or a connection that says nothing is dropped without QEMU
// ever stopping.

// SniffTimeout is how long a client has to send its first packet.
const SniffTimeout = 3 * time.Second

// maxFirstPacket bounds what is read before deciding: gdb's qSupported
// is a few hundred bytes.
const maxFirstPacket = 4096

// NotGDBError is a client that did not open with a remote-protocol
// packet.
type NotGDBError struct {
	// First holds the first bytes the client sent (at most 16).
	First  []byte
	Reason string
}

func (e *NotGDBError) Error() string {
	if len(e.First) == 0 {
		return "not a debugger: " + e.Reason
	}
	return fmt.Sprintf("not a debugger: %s (it sent %q)", e.Reason, e.First)
}

// Sniff waits up to timeout for the client's first packet, well formed
// and with a good checksum, without taking it off the socket (MSG_PEEK):
// gdbserver, which gets the socket next, reads the client's bytes intact.
func Sniff(conn syscall.Conn, timeout time.Duration) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	if d, ok := conn.(interface{ SetReadDeadline(time.Time) error }); ok {
		if err := d.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		defer func() { _ = d.SetReadDeadline(time.Time{}) }()
	}
	buf := make([]byte, maxFirstPacket)
	var n int
	var verdict error
	err = rc.Read(func(fd uintptr) bool {
		m, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // wait for data
		case err != nil:
			verdict = err
			return true
		case m == 0:
			verdict = io.EOF
			return true
		}
		n = m
		complete, bad := firstPacket(buf[:n])
		switch {
		case bad != "":
			verdict = &NotGDBError{First: head(buf[:n]), Reason: bad}
		case complete:
			verdict = nil
		case n == len(buf):
			verdict = &NotGDBError{First: head(buf[:n]), Reason: "no packet end in its first " + fmt.Sprint(len(buf)) + " bytes"}
		default:
			// Part of a packet: the poller wakes this up when more
			// arrives (edge-triggered), or the deadline ends it.
			return false
		}
		return true
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if n == 0 {
			return &NotGDBError{Reason: fmt.Sprintf("it sent nothing within %v", timeout)}
		}
		return &NotGDBError{First: head(buf[:n]), Reason: fmt.Sprintf("no complete packet within %v", timeout)}
	case err != nil:
		return err
	case errors.Is(verdict, io.EOF):
		return &NotGDBError{First: head(buf[:n]), Reason: "it closed the connection"}
	}
	return verdict
}

func head(b []byte) []byte {
	return append([]byte(nil), b[:min(len(b), 16)]...)
}

// firstPacket checks the start of a conversation: any acks ("+"), then
// "$data#xx" whose checksum is the sum of data's bytes modulo 256.
func firstPacket(b []byte) (complete bool, bad string) {
	i := 0
	for i < len(b) && b[i] == '+' {
		i++
	}
	if i == len(b) {
		return false, ""
	}
	if b[i] != '$' {
		return false, "its first bytes are not a remote-protocol packet"
	}
	var sum byte
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; c {
		case '#':
			if j+2 >= len(b) {
				if j+1 < len(b) && !isHex(b[j+1]) {
					return false, "malformed packet checksum"
				}
				return false, ""
			}
			if !isHex(b[j+1]) || !isHex(b[j+2]) {
				return false, "malformed packet checksum"
			}
			if fmt.Sprintf("%02x", sum) != string(lower(b[j+1:j+3])) {
				return false, "bad packet checksum"
			}
			return true, ""
		case '$':
			return false, "malformed packet"
		default:
			sum += c
		}
	}
	return false, ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func lower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// ErrorPacket is a remote-protocol error reply carrying text ("E.text"),
// which gdb prints as "Remote failure reply: E.text". Characters that
// the protocol reserves are replaced.
func ErrorPacket(text string) []byte {
	body := []byte("E.")
	for _, c := range []byte(text) {
		if c == '$' || c == '#' || c == '}' || c == '*' || c < 0x20 || c > 0x7e {
			c = '?'
		}
		body = append(body, c)
	}
	var sum byte
	for _, c := range body {
		sum += c
	}
	return []byte(fmt.Sprintf("$%s#%02x", body, sum))
}
