package gdbwrap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
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

// Server hands each debugger that connects to the port to a gdbserver
// attached to the process, one debugger at a time.
type Server struct {
	Listener  *net.TCPListener
	GDBServer string
	PID       int
	Allow     []netip.Prefix
	// Logf receives one line per event worth a log entry.
	Logf func(format string, args ...any)
	// Stderr receives gdbserver's own messages (the toolstack's log).
	Stderr *os.File
	// Attached runs, in its own goroutine, after each gdbserver starts.
	Attached func(gdbserverPID int)
	// AfterSession runs when a debugger has gone; the launcher resumes
	// QEMU there, in case it was left stopped.
	AfterSession func()

	mu     sync.Mutex
	active *exec.Cmd
	closed bool
	served sync.WaitGroup
}

// Serve accepts debuggers until Close.
func (s *Server) Serve() {
	for {
		conn, err := s.Listener.AcceptTCP()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			s.Logf("debug port: accept: %v", err)
			continue
		}
		s.handle(conn)
	}
}

func (s *Server) handle(conn *net.TCPConn) {
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	if !Allowed(peer.Addr(), s.Allow) {
		s.Logf("debug port: refused %s: not in DMLAUNCH_GDB_ALLOW", peer)
		conn.Close()
		return
	}
	s.mu.Lock()
	if s.closed || s.active != nil {
		busy := s.active != nil
		s.mu.Unlock()
		if busy {
			s.Logf("debug port: refused %s: a debugger is already attached", peer)
			// A gdb error reply, so the client says why rather than hangs.
			_, _ = conn.Write([]byte("$E01#a6"))
		}
		conn.Close()
		return
	}
	// gdbserver gets the connection as its stdin and stdout.
	f, err := conn.File()
	conn.Close()
	if err != nil {
		s.mu.Unlock()
		s.Logf("debug port: %s: %v", peer, err)
		return
	}
	cmd := exec.Command(s.GDBServer, AttachArgs(s.GDBServer, s.PID)[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, s.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.active = cmd
	s.served.Add(1)
	started := make(chan error, 1)
	// Pdeathsig follows the thread that forked the child: start and wait
	// on one locked thread, or gdbserver dies when the runtime retires it.
	go func() {
		defer s.served.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		f.Close()
		if err == nil {
			err = cmd.Wait()
			s.Logf("debug port: debugger %s left (gdbserver: %s)", peer, exitText(err))
		}
		s.mu.Lock()
		s.active = nil
		s.mu.Unlock()
		if s.AfterSession != nil {
			s.AfterSession()
		}
	}()
	err = <-started
	s.mu.Unlock()
	if err != nil {
		s.Logf("debug port: cannot start %s: %v", s.GDBServer, err)
		return
	}
	s.Logf("debug port: debugger %s attached: %s", peer, fmt.Sprint(cmd.Args))
	if s.Attached != nil {
		go s.Attached(cmd.Process.Pid)
	}
}

// Shutdown stops accepting and gives an attached gdbserver up to grace to
// end by itself (after QEMU exits, it still has to tell gdb), then kills it
// (the kernel detaches it from QEMU) and waits for it to be reaped.
func (s *Server) Shutdown(grace time.Duration) {
	s.mu.Lock()
	s.closed = true
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
