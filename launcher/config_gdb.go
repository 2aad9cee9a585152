package launcher

import (
	"fmt"
	"net/netip"

	"github.com/dmlaunch/dmlaunch/gdbwrap"
)

// ListenUnix is the DMLAUNCH_GDB_LISTEN value for a unix socket in the
// state directory.
const ListenUnix = "unix"

// applyGDB reads the debug port's settings: where it listens, and who may
// use it.
func (c *Config) applyGDB(get func(string) string, bad func(name, reason string) error) error {
	if listen := get("DMLAUNCH_GDB_LISTEN"); listen == ListenUnix {
		c.GDBUnix = true
	} else {
		ap, err := netip.ParseAddrPort(listen)
		if err != nil || ap.Port() == 0 {
			return bad("DMLAUNCH_GDB_LISTEN", "must be ADDR:BASEPORT, such as 127.0.0.1:1234 or [::1]:1234, or unix")
		}
		c.GDBListen = ap
	}
	users, err := gdbwrap.ParseUsers(splitList(get("DMLAUNCH_GDB_USERS")))
	if err != nil {
		return bad("DMLAUNCH_GDB_USERS", err.Error())
	}
	c.GDBUsers = users
	for _, s := range splitList(get("DMLAUNCH_GDB_ALLOW")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return bad("DMLAUNCH_GDB_ALLOW", fmt.Sprintf("has %q, which is not a network in CIDR form such as 192.0.2.0/24", s))
		}
		// An IPv4 network matches IPv4 peers however they arrive: peers
		// on a dual-stack socket show as ::ffff:a.b.c.d and are unmapped.
		c.GDBAllow = append(c.GDBAllow, netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked())
	}
	if !c.GDBUnix && !c.GDBListen.Addr().Unmap().IsLoopback() && len(c.GDBAllow) == 0 {
		return bad("DMLAUNCH_GDB_LISTEN", "is not a loopback address, and gdbserver has no authentication; set DMLAUNCH_GDB_ALLOW to the client networks allowed to connect, or listen on 127.0.0.1 and use ssh -L")
	}
	return nil
}

// unmappedBits is the prefix length of p once an IPv4-mapped IPv6
// network (::ffff:192.0.2.0/120) is written as IPv4 (192.0.2.0/24).
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}
