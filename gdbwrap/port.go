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
	"syscall"
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

// Allowed applies the client allowlist: with no list, only loopback
// peers; otherwise only peers inside one of the networks.
func Allowed(peer netip.Addr, allow []netip.Prefix) bool {
	peer = peer.Unmap()
	if len(allow) == 0 {
		return peer.IsLoopback()
	}
	for _, p := range allow {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}
