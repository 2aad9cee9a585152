package gdbwrap

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A debugger on QEMU is root on the host: the access check decides who
// gets one. A local peer (loopback TCP, the unix socket, or any TCP peer
// that is a socket of this machine) is known by its uid, which the kernel
// tells; a remote peer only by its network.

// Users are the local users allowed a debugger besides root
// (DMLAUNCH_GDB_USERS).
type Users struct {
	UIDs []uint32
	GIDs []uint32 // @group: every member
	// Given is the setting as written, for messages.
	Given []string
}

// ParseUsers reads DMLAUNCH_GDB_USERS entries: user names, uids, @group.
// Names are resolved now, so a typo stops the launch instead of refusing
// the operator later.
func ParseUsers(list []string) (Users, error) {
	u := Users{Given: list}
	for _, e := range list {
		if g, ok := strings.CutPrefix(e, "@"); ok {
			gid, err := lookupGroup(g)
			if err != nil {
				return Users{}, err
			}
			u.GIDs = append(u.GIDs, gid)
			continue
		}
		if n, err := strconv.ParseUint(e, 10, 32); err == nil {
			u.UIDs = append(u.UIDs, uint32(n))
			continue
		}
		usr, err := user.Lookup(e)
		if err != nil {
			return Users{}, fmt.Errorf("has %q, which is no user of this machine (use a user name, a uid or @group)", e)
		}
		n, _ := strconv.ParseUint(usr.Uid, 10, 32)
		u.UIDs = append(u.UIDs, uint32(n))
	}
	return u, nil
}

func lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("has @%s, which is no group of this machine", name)
	}
	n, _ := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), nil
}

// Allows reports whether uid may debug: root, a listed uid, or a member
// (primary or supplementary) of a listed group.
func (u Users) Allows(uid uint32) bool {
	if uid == 0 || slices.Contains(u.UIDs, uid) {
		return true
	}
	if len(u.GIDs) == 0 {
		return false
	}
	usr, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return false
	}
	gids, _ := usr.GroupIds()
	for _, g := range append(gids, usr.Gid) {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil && slices.Contains(u.GIDs, uint32(n)) {
			return true
		}
	}
	return false
}

// Access is the debug port's rule.
type Access struct {
	Users Users
	// Allow lists the client networks served when the port listens on a
	// non-loopback address; everyone on them is trusted.
	Allow []netip.Prefix
}

// Peer is who connected.
type Peer struct {
	// Addr is the client's address, "unix" for the unix socket.
	Addr string
	// UID is the connecting process's uid, -1 for a remote peer.
	UID int
}

func (p Peer) String() string {
	if p.UID < 0 {
		return p.Addr + " (remote)"
	}
	return p.Addr + " (uid " + strconv.Itoa(p.UID) + ")"
}

// RefusedError is a peer the access check turned away.
type RefusedError struct {
	Peer   Peer
	Reason string
}

func (e *RefusedError) Error() string { return "refused " + e.Peer.String() + ": " + e.Reason }

// Check identifies the peer of conn and applies the rule.
func (a Access) Check(conn net.Conn) (Peer, error) {
	switch c := conn.(type) {
	case *net.UnixConn:
		peer := Peer{Addr: "unix", UID: -1}
		uid, err := unixPeerUID(c)
		if err != nil {
			return peer, &RefusedError{peer, "the kernel did not say who it is: " + err.Error()}
		}
		peer.UID = int(uid)
		return peer, a.checkLocal(peer)
	case *net.TCPConn:
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		peer := Peer{Addr: remote.String(), UID: -1}
		uid, found, err := tcpPeerUID(local, remote)
		switch {
		case err != nil:
			return peer, &RefusedError{peer, "the kernel's socket tables could not be read: " + err.Error()}
		case found:
			peer.UID = int(uid)
			return peer, a.checkLocal(peer)
		case remote.Addr().IsLoopback():
			// A loopback peer is always a socket of this machine.
			return peer, &RefusedError{peer, "its socket is not in the kernel's tables, so its uid is unknown"}
		}
		for _, p := range a.Allow {
			if p.Contains(remote.Addr()) {
				return peer, nil
			}
		}
		return peer, &RefusedError{peer, "not in DMLAUNCH_GDB_ALLOW"}
	}
	return Peer{Addr: conn.RemoteAddr().String(), UID: -1}, &RefusedError{Peer{Addr: conn.RemoteAddr().String(), UID: -1}, "unknown kind of connection"}
}

func (a Access) checkLocal(peer Peer) error {
	if a.Users.Allows(uint32(peer.UID)) {
		return nil
	}
	return &RefusedError{peer, "uid " + strconv.Itoa(peer.UID) + " is neither root nor in DMLAUNCH_GDB_USERS"}
}

// unixPeerUID asks the kernel who is at the other end (SO_PEERCRED: the
// credentials of the process that connected).
func unixPeerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}

// tcpPeerUID finds the client's own socket in the kernel's TCP tables
// (/proc/net/tcp and tcp6): the entry whose local end is our peer and
// whose remote end is us. Its uid is the uid of the process that created
// that socket. found is false when the peer is not a socket of this
// machine's network namespace: a remote peer.
func tcpPeerUID(local, remote netip.AddrPort) (uid uint32, found bool, err error) {
	var errs []error
	for _, table := range []struct {
		path string
		v6   bool
	}{{"/proc/net/tcp", false}, {"/proc/net/tcp6", true}} {
		if !table.v6 && !remote.Addr().Is4() {
			continue
		}
		want := procNetAddr(remote, table.v6) + " " + procNetAddr(local, table.v6)
		uid, found, err := scanTCPTable(table.path, want)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if found {
			return uid, true, nil
		}
	}
	return 0, false, errors.Join(errs...)
}

func scanTCPTable(path, want string) (uint32, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid ..."
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1]+" "+fields[2] != want {
			continue
		}
		n, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("%s: uid %q", path, fields[7])
		}
		return uint32(n), true, nil
	}
	return 0, false, sc.Err()
}

// procNetAddr writes an address as /proc/net/tcp{,6} does: the address
// in 32-bit words in host (little-endian) order, then the port, in hex.
// An IPv4 peer of an IPv6 socket is in tcp6 as ::ffff:a.b.c.d.
func procNetAddr(ap netip.AddrPort, v6 bool) string {
	var b []byte
	if v6 {
		a := ap.Addr().As16()
		b = a[:]
	} else {
		a := ap.Addr().As4()
		b = a[:]
	}
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%02X%02X%02X%02X", b[i+3], b[i+2], b[i+1], b[i])
	}
	fmt.Fprintf(&s, ":%04X", ap.Port())
	return s.String()
}
