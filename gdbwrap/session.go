package gdbwrap

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// AttachArgs is gdbserver's command line for one debugger: attach to pid
// and talk over stdin/stdout ("-"), then exit when the debugger leaves,
// detaching so the process runs on untraced.
func AttachArgs(gdbserver string, pid int) []string {
	return []string{gdbserver, "--once", "--attach", "-", strconv.Itoa(pid)}
}

// maxPending bounds the connections being checked at once: past it, new
// ones are closed at once, so a flood costs neither memory nor a stall.
const maxPending = 16

// Server serves the debug port: each client the access check lets in and
// that speaks the remote protocol gets a gdbserver attached to the
// process, one debugger at a time.
type Server struct {
	Listener  net.Listener
	GDBServer string
	// Process is the process to debug (QEMU).
	Process *os.Process
	Access  Access
	// Hold, if set, is released to the first gdbserver that attaches.
	Hold *Hold
	// SniffTimeout is how long a client has to send its first packet;
	// zero means SniffTimeout.
	SniffTimeout time.Duration
	// Logf receives one line per event worth a log entry.
	Logf func(format string, args ...any)
	// Stderr receives gdbserver's own messages (the toolstack's log).
	Stderr *os.File
	// Command, if set, is the tool each debugger gets instead of
	// gdbserver (vgdb for a process under valgrind), with the connection
	// as its stdin and stdout.
	Command func(pid int) []string

	mu      sync.Mutex
	active  *exec.Cmd
	closed  bool
	served  sync.WaitGroup
	pending chan struct{}
	// checking are the connections not yet handed to a gdbserver:
	// Shutdown closes them.
	checking map[net.Conn]bool
	// turnedAway limits the lines logged for refused and dropped clients:
	// anyone who can connect could otherwise fill the toolstack's log.
	turnedAway rateLimit
}

// rateLimit lets through at most limitLines lines per limitWindow and
// counts the rest.
type rateLimit struct {
	mu         sync.Mutex
	start      time.Time
	lines      int
	suppressed int
}

const (
	limitLines  = 20
	limitWindow = time.Minute
)

// allow reports whether a line may be logged now and, if so, how many
// were suppressed since the last one logged.
func (r *rateLimit) allow(now time.Time) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.start) >= limitWindow {
		r.start, r.lines = now, 0
	}
	if r.lines >= limitLines {
		r.suppressed++
		return false, 0
	}
	r.lines++
	suppressed, r.suppressed = r.suppressed, 0
	return true, suppressed
}

// logTurnedAway logs a refused or dropped client, within the rate limit.
func (s *Server) logTurnedAway(format string, args ...any) {
	ok, suppressed := s.turnedAway.allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		s.Logf("debug port: %d more clients were refused or dropped without a log line (at most %d lines a minute)", suppressed, limitLines)
	}
	s.Logf(format, args...)
}

// Serve accepts clients until Shutdown.
func (s *Server) Serve() {
	s.pending = make(chan struct{}, maxPending)
	s.mu.Lock()
	s.checking = map[net.Conn]bool{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		conn, err := s.Listener.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds (EMFILE) or similar: wait rather than spin,
			// as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Logf("debug port: accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		select {
		case s.pending <- struct{}{}:
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				conn.Close()
				return
			}
			s.served.Add(1)
			s.checking[conn] = true
			s.mu.Unlock()
			go func() {
				defer func() {
					s.mu.Lock()
					delete(s.checking, conn)
					s.mu.Unlock()
					<-s.pending
					s.served.Done()
				}()
				s.handle(conn)
			}()
		default:
			s.logTurnedAway("debug port: dropped %s: %d connections are being checked already", conn.RemoteAddr(), maxPending)
			conn.Close()
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) handle(conn net.Conn) {
	peer, err := s.Access.Check(conn)
	if err != nil {
		s.logTurnedAway("debug port: %v", err)
		s.refuse(conn, "dmlaunch refused this debugger: "+refusalText(err))
		return
	}
	timeout := s.SniffTimeout
	if timeout == 0 {
		timeout = SniffTimeout
	}
	if err := Sniff(conn.(syscall.Conn), timeout); err != nil {
		s.logTurnedAway("debug port: dropped %s: %v", peer, err)
		conn.Close()
		return
	}
	s.mu.Lock()
	if s.closed || s.active != nil {
		busy := s.active != nil
		s.mu.Unlock()
		if busy {
			s.Logf("debug port: refused %s: a debugger is already attached", peer)
			s.refuse(conn, "dmlaunch: a debugger is already attached to this domain; try again when it has detached")
		} else {
			conn.Close()
		}
		return
	}
	// gdbserver gets the connection as its stdin and stdout; the client's
	// first packet is still unread in it.
	f, err := conn.(interface{ File() (*os.File, error) }).File()
	conn.Close()
	if err != nil {
		s.mu.Unlock()
		s.Logf("debug port: %s: %v", peer, err)
		return
	}
	args := AttachArgs(s.GDBServer, s.Process.Pid)
	if s.Command != nil {
		args = s.Command(s.Process.Pid)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, s.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.active = cmd
	started := make(chan error, 1)
	ended := make(chan struct{})
	// Pdeathsig follows the thread that forked the child: start and wait
	// on one locked thread, or gdbserver dies when the runtime retires it.
	go func() {
		defer close(ended)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		f.Close() // gdbserver holds it now
		started <- err
		if err != nil {
			s.mu.Lock()
			s.active = nil
			s.mu.Unlock()
			return
		}
		err = cmd.Wait()
		if err != nil {
			s.resumeIfStopped()
		}
		// The port is free before the log says the debugger left: a
		// debugger that connects as soon as it reads the line is served,
		// not refused as a second one.
		s.mu.Lock()
		s.active = nil
		s.mu.Unlock()
		s.Logf("debug port: debugger %s left (%s: %s)", peer, filepath.Base(args[0]), exitText(err))
	}()
	err = <-started
	s.mu.Unlock()
	if err != nil {
		s.Logf("debug port: cannot start %s: %v", args[0], err)
		return
	}
	s.Logf("debug port: debugger %s attached: %v", peer, cmd.Args)
	if s.Hold != nil && !s.Hold.Released() {
		if err := s.Hold.ReleaseTo(cmd.Process.Pid, 30*time.Second); err != nil {
			s.Logf("debug port: the held process stays held: %v", err)
		}
	}
	<-ended
}

// resumeIfStopped ends the job-control stop that a gdbserver killed or
// crashed in mid-attach leaves behind (its PTRACE_ATTACH's SIGSTOP):
// nobody else would, and the guest would stay frozen. A process still
// held (gdb-wait) is left alone, and the signal goes through the process
// handle, so a reaped process's pid is never signalled.
func (s *Server) resumeIfStopped() {
	if s.Hold != nil && !s.Hold.Released() {
		return
	}
	tracer, state, err := TraceState(s.Process.Pid)
	if err != nil || tracer != 0 || state != 'T' {
		return
	}
	s.Logf("debug port: the debugger left pid %d stopped: resuming it", s.Process.Pid)
	_ = s.Process.Signal(syscall.SIGCONT)
}

// refusalText is what a refused client is told: the reason, without the
// address it already knows.
func refusalText(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason
	}
	return err.Error()
}

// refuse answers the client's first packet with an error reply that gdb
// prints, then closes the connection gracefully: what the client sent is
// read first, since closing a socket with unread data sends a reset, and
// the reset can overtake the reply.
func (s *Server) refuse(conn net.Conn, text string) {
	defer conn.Close()
	_ = Sniff(conn.(syscall.Conn), time.Second)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	drain := func() {
		buf := make([]byte, 512)
		for {
			if err := conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				return
			}
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}
	drain()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write(append([]byte("+"), ErrorPacket(text)...)); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// Until the client closes (gdb does on the end of the stream), at
	// most two seconds.
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, conn)
}

// Shutdown stops accepting and gives an attached gdbserver up to grace to
// end by itself (after QEMU exits, it still has to tell gdb), then kills
// it (the kernel detaches it from QEMU) and waits for it to be reaped.
func (s *Server) Shutdown(grace time.Duration) {
	s.mu.Lock()
	s.closed = true
	for c := range s.checking {
		c.Close()
	}
	s.mu.Unlock()
	s.Listener.Close()
	ended := make(chan struct{})
	go func() { s.served.Wait(); close(ended) }()
	select {
	case <-ended:
		return
	case <-time.After(grace):
	}
	s.mu.Lock()
	if s.active != nil && s.active.Process != nil {
		// Through the handle (a pidfd): never a reaped gdbserver's pid.
		_ = s.active.Process.Kill()
	}
	s.mu.Unlock()
	<-ended
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}
