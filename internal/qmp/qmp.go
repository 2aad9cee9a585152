// Package qmp is a small client for QEMU's machine protocol, enough to
// run human monitor commands over the launcher's socket. Every step has a
// deadline and every reply a size cap: a QEMU that stops answering (stopped
// in a debugger, wedged) or a peer that never stops talking ends a call with
// an error, never a hang.
package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Options: generous for any monitor command a person types,
// short enough that a script learns of a stuck QEMU.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultMaxReply = 16 << 20
)

// Options bound a session.
type Options struct {
	// Timeout bounds the connect, the greeting with the capabilities
	// negotiation, and each command's reply. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxReply caps the bytes of one message from QEMU. Zero means
	// DefaultMaxReply.
	MaxReply int64
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxReply <= 0 {
		o.MaxReply = DefaultMaxReply
	}
	return o
}

// Monitor runs commands on a QEMU.
type Monitor interface {
	// Execute runs a QMP command and returns its "return" value.
	Execute(command string, args any) (json.RawMessage, error)
	// HumanMonitorCommand runs a human monitor (HMP) command line. An
	// output that QEMU's monitor writes only for a failed command comes
	// back with an *HMPError as well.
	HumanMonitorCommand(line string) (string, error)
	// PeerPID is the pid of the process serving the socket (QEMU), as
	// the kernel reports it; 0 when unknown.
	PeerPID() int
	Close() error
}

// Error is an error reply from QEMU.
type Error struct {
	Class, Desc string
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// HMPError is a human monitor command that QEMU ran and reported as
// failed. The human monitor has no error status: failure is recognised by
// the words QEMU's monitor prints for it (see IsHMPFailure).
type HMPError struct {
	Line   string
	Output string
}

func (e *HMPError) Error() string {
	return fmt.Sprintf("QEMU reported an error for %q: %s", e.Line, strings.TrimSpace(strings.ReplaceAll(e.Output, "\r\n", "\n")))
}

// ErrNotQMP is returned when the socket does not greet like QEMU.
var ErrNotQMP = errors.New("not a QMP socket: no QMP greeting")

// ErrTimeout is a step that did not finish within Options.Timeout.
var ErrTimeout = errors.New("timed out")

// ErrClosed is a connection that QEMU closed before replying.
var ErrClosed = errors.New("QEMU closed the connection")

// ReplyTooLargeError is a message from QEMU over Options.MaxReply bytes.
type ReplyTooLargeError struct{ Limit int64 }

func (e *ReplyTooLargeError) Error() string {
	return fmt.Sprintf("the reply is over the %s limit", FormatBytes(e.Limit))
}

// Stages of a session, for ExchangeError.
const (
	StageConnect      = "connect"
	StageGreeting     = "greeting"
	StageCapabilities = "capabilities negotiation"
	StageSend         = "send"
	StageReply        = "reply"
)

// ExchangeError is a failed step of a session: which step, for which
// command, and why (ErrTimeout, ErrClosed, *ReplyTooLargeError, ErrNotQMP,
// or the system's error).
type ExchangeError struct {
	Stage   string
	Command string
	Timeout time.Duration
	// PeerPID is QEMU's pid when the connection got that far.
	PeerPID int
	Err     error
}

func (e *ExchangeError) Error() string {
	what := e.Err.Error()
	if errors.Is(e.Err, ErrTimeout) {
		what = "no answer within " + e.Timeout.String()
	}
	switch e.Stage {
	case StageConnect:
		return "connect: " + what
	case StageGreeting:
		if errors.Is(e.Err, ErrTimeout) {
			return "QEMU accepted the connection but sent no QMP greeting within " + e.Timeout.String()
		}
		return "greeting: " + what
	case StageCapabilities:
		return "capabilities negotiation: " + what
	case StageSend:
		return fmt.Sprintf("%q not sent: %s", e.Command, what)
	}
	return fmt.Sprintf("%q: %s", e.Command, what)
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// Sent tells whether the command reached QEMU: after a failed reply it
// may have run; after any earlier stage it did not.
func (e *ExchangeError) Sent() bool { return e.Stage == StageReply }

type client struct {
	conn    net.Conn
	opts    Options
	limit   *capReader
	dec     *json.Decoder
	enc     *json.Encoder
	peerPID int
	nextID  int
}

type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event  string          `json:"event"`
	ID     json.RawMessage `json:"id"`
}

// capReader fails a read once more than the cap has been read since the
// last reset: a json.Decoder would otherwise keep growing its buffer for as
// long as a value goes on.
type capReader struct {
	r          io.Reader
	limit, out int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.out >= c.limit {
		return 0, &ReplyTooLargeError{c.limit}
	}
	if int64(len(p)) > c.limit-c.out {
		p = p[:c.limit-c.out]
	}
	n, err := c.r.Read(p)
	c.out += int64(n)
	return n, err
}

func (c *capReader) reset() { c.out = 0 }

// Dial connects to a QMP unix socket and negotiates capabilities, all
// within o.Timeout.
func Dial(path string, o Options) (Monitor, error) {
	o = o.withDefaults()
	conn, err := net.DialTimeout("unix", path, o.Timeout)
	if err != nil {
		return nil, &ExchangeError{Stage: StageConnect, Timeout: o.Timeout, Err: classify(err)}
	}
	c := &client{conn: conn, opts: o, peerPID: peerPID(conn)}
	c.limit = &capReader{r: conn, limit: o.MaxReply}
	// A json.Decoder, not a line scanner: replies may be long (a
	// bufio.Scanner gives up at 64 KiB); the cap is capReader's.
	c.dec = json.NewDecoder(c.limit)
	c.enc = json.NewEncoder(conn)
	_ = conn.SetDeadline(time.Now().Add(o.Timeout))
	var greeting message
	err = c.dec.Decode(&greeting)
	var tooLarge *ReplyTooLargeError
	switch {
	case err == nil && greeting.QMP == nil:
		err = ErrNotQMP
	case err == nil:
	case errors.As(err, &tooLarge), classify(err) != err:
		err = classify(err)
	default: // not JSON
		err = fmt.Errorf("%w (%v)", ErrNotQMP, err)
	}
	if err != nil {
		conn.Close()
		return nil, &ExchangeError{Stage: StageGreeting, Timeout: o.Timeout, PeerPID: c.peerPID, Err: err}
	}
	if _, err := c.execute("qmp_capabilities", nil, false); err != nil {
		conn.Close()
		var xe *ExchangeError
		if errors.As(err, &xe) {
			xe.Stage = StageCapabilities
			return nil, xe
		}
		return nil, &ExchangeError{Stage: StageCapabilities, Timeout: o.Timeout, PeerPID: c.peerPID, Err: err}
	}
	return c, nil
}

// peerPID asks the kernel which process listens on the socket.
func peerPID(conn net.Conn) int {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// classify turns the ways a read or write ends into ErrTimeout and
// ErrClosed, and leaves every other error as it is.
func classify(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EPIPE):
		return ErrClosed
	}
	return err
}

func (c *client) PeerPID() int { return c.peerPID }

func (c *client) Execute(command string, args any) (json.RawMessage, error) {
	return c.execute(command, args, true)
}

func (c *client) execute(command string, args any, resetDeadline bool) (json.RawMessage, error) {
	c.nextID++
	id := fmt.Sprintf("dmctl-%d", c.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	fail := func(stage string, err error) error {
		return &ExchangeError{Stage: stage, Command: command, Timeout: c.opts.Timeout, PeerPID: c.peerPID, Err: err}
	}
	if resetDeadline {
		_ = c.conn.SetDeadline(time.Now().Add(c.opts.Timeout))
	}
	if err := c.enc.Encode(req); err != nil {
		// Not sent: the command did not run.
		return nil, fail(StageSend, classify(err))
	}
	wantID, _ := json.Marshal(id)
	for {
		c.limit.reset()
		var m message
		if err := c.dec.Decode(&m); err != nil {
			return nil, fail(StageReply, classify(err))
		}
		switch {
		case m.Event != "":
			continue // asynchronous events are not replies
		case m.ID != nil && string(m.ID) != string(wantID):
			continue // a reply to an earlier request
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
	if IsHMPFailure(out) {
		return out, &HMPError{Line: line, Output: out}
	}
	return out, nil
}

func (c *client) Close() error { return c.conn.Close() }

// What QEMU's human monitor prints, and only prints, when a command fails
// (monitor/hmp.c, monitor/hmp-cmds.c): hmp_handle_error's "Error: "
// prefix, the parser's unknown or unavailable command, and the parser's
// closing hint after any argument it could not take.
var (
	hmpFailureFirst = regexp.MustCompile(`^(Error: |unknown command: '|Command ['"].*['"] (is )?not available)`)
	hmpFailureLast  = regexp.MustCompile(`(^|\n)Try "help [^"\n]*" for more information\r?\n?$`)
)

// IsHMPFailure tells whether a human monitor command's output is QEMU
// reporting that the command failed.
func IsHMPFailure(out string) bool {
	return hmpFailureFirst.MatchString(out) || hmpFailureLast.MatchString(out)
}

// FormatBytes writes a byte count the way options take it: 16 MiB.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
