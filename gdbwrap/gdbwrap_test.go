package gdbwrap

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAddress(t *testing.T) {
	a, err := Address(netip.MustParseAddrPort("127.0.0.1:1234"), 5)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1239", a.String())
	a, err = Address(netip.MustParseAddrPort("[::1]:40000"), 0)
	require.NoError(t, err)
	assert.Equal(t, "[::1]:40000", a.String())

	_, err = Address(netip.MustParseAddrPort("127.0.0.1:65000"), 600)
	var pr *PortRangeError
	require.True(t, errors.As(err, &pr))
	assert.Contains(t, err.Error(), "65000+600 is beyond 65535")
}

func TestListenBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	_, err = Listen(addr)
	var busy *PortBusyError
	require.True(t, errors.As(err, &busy), "got %v", err)
	assert.Contains(t, err.Error(), "is already in use")
	assert.Contains(t, err.Error(), "change DMLAUNCH_GDB_LISTEN")
}

func TestAttachArgs(t *testing.T) {
	assert.Equal(t, []string{"/usr/bin/gdbserver", "--once", "--attach", "-", "4242"}, AttachArgs("/usr/bin/gdbserver", 4242))
}
