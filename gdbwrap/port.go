// Package gdbwrap owns a domain's debug port and hands each accepted
// debugger to a gdbserver attached to the device model. The port is never
// gdbserver's: gdbserver listens on every address whatever it is told, and
// has no authentication.
package gdbwrap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PortRangeError is a base port plus domid beyond 65535.
type PortRangeError struct {
	Base  uint16
	Domid int
}

func (e *PortRangeError) Error() string {
	return fmt.Sprintf("debug port %d+%d is beyond 65535", e.Base, e.Domid)
}

// PortBusyError is a debug port someone else holds.
type PortBusyError struct {
	Addr netip.AddrPort
	Err  error
}

func (e *PortBusyError) Error() string {
	return fmt.Sprintf("debug port %s is already in use (%v); stop whatever holds it (ss -ltnp 'sport = :%d') or change DMLAUNCH_GDB_LISTEN",
		e.Addr, e.Err, e.Addr.Port())
}

func (e *PortBusyError) Unwrap() error { return e.Err }

// Address is the debug address of a domain: base port + domid.
func Address(listen netip.AddrPort, domid int) (netip.AddrPort, error) {
	port := int(listen.Port()) + domid
	if domid < 0 || port > 65535 {
		return netip.AddrPort{}, &PortRangeError{listen.Port(), domid}
	}
	return netip.AddrPortFrom(listen.Addr(), uint16(port)), nil
}

// Listen binds the debug port. It is bound before QEMU starts, so a busy
// port stops the launch instead of leaving a domain nobody can reach.
func Listen(addr netip.AddrPort) (*net.TCPListener, error) {
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, &PortBusyError{addr, err}
		}
		return nil, fmt.Errorf("listen on debug port %s: %w", addr, err)
	}
	return l, nil
}

// UnixSocketPath is a domain's debug socket in the state directory.
func UnixSocketPath(stateDir string, domid int) string {
	return filepath.Join(stateDir, strconv.Itoa(domid)+".gdb")
}

// UnixTarget is gdb's name for a unix socket: the path itself. gdb (8.3
// and later) connects to a socket when "target remote" names one; the
// "unix::PATH" form is gdbserver's, for listening.
func UnixTarget(path string) string { return path }

// IsUnixTarget tells a recorded unix socket target from a TCP address.
func IsUnixTarget(target string) bool { return strings.HasPrefix(target, "/") }

// ListenUnix binds the debug socket at path with mode 0600 from its
// creation (the mode is set on the socket before bind, so it is never
// reachable by others, even for an instant). A socket left by a launcher
// that was killed is replaced.
//
// The socket is made with plain system calls rather than through
// net.ListenConfig, whose Listen links the whole name resolver into
// dmlaunch (its tables are built at every launch's start-up).
func ListenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		_ = os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("listen on debug socket %s: %w", path, listenError(path, "socket", err))
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener works on a copy
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, fmt.Errorf("listen on debug socket %s: %w", path, listenError(path, "fchmod", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("debug socket %s is in use by something else: %w", path, listenError(path, "bind", err))
		}
		return nil, fmt.Errorf("listen on debug socket %s: %w", path, listenError(path, "bind", err))
	}
	// The kernel caps the backlog at net.core.somaxconn, as net does.
	if err := unix.Listen(fd, 1<<16-1); err != nil {
		return nil, fmt.Errorf("listen on debug socket %s: %w", path, listenError(path, "listen", err))
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen on debug socket %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	// Removed on Close, as a socket that net made itself is.
	ul.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil { // where fchmod before bind is not honoured
		ul.Close()
		return nil, err
	}
	return ul, nil
}

// listenError is a failed system call of ListenUnix, worded as net's own.
func listenError(path, call string, err error) error {
	return &net.OpError{Op: "listen", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError(call, err)}
}

// LocalTarget is what gdb on this machine gives "target remote" to reach
// a debug port recorded as target: a wildcard listen address is reached
// through loopback (0.0.0.0 through 127.0.0.1, :: through ::1).
func LocalTarget(target string) string {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().IsUnspecified() {
		return target
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if ap.Addr().Is6() {
		lo = netip.IPv6Loopback()
	}
	return netip.AddrPortFrom(lo, ap.Port()).String()
}
