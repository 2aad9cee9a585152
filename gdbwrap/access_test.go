package gdbwrap

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseUsers(t *testing.T) {
	tests := []struct {
		name    string
		list    []string
		wantErr string
		allows  []uint32
		refuses []uint32
	}{
		{"none: root only", nil, "", []uint32{0}, []uint32{1, 1000}},
		{"uids", []string{"1000", "1002"}, "", []uint32{0, 1000, 1002}, []uint32{1001}},
		{"a name", []string{"root"}, "", []uint32{0}, []uint32{1000}},
		{"daemon by name", []string{"daemon"}, "", []uint32{1}, []uint32{2}},
		{"a group by number", []string{"@4242"}, "", []uint32{0}, []uint32{4242}},
		{"unknown name", []string{"no-such-user-x"}, `"no-such-user-x", which is no user`, nil, nil},
		{"unknown group", []string{"@no-such-group-x"}, "@no-such-group-x, which is no group", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUsers(tt.list)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			for _, uid := range tt.allows {
				assert.True(t, u.Allows(uid), "uid %d", uid)
			}
			for _, uid := range tt.refuses {
				assert.False(t, u.Allows(uid), "uid %d", uid)
			}
		})
	}
}

func TestGroupMembersAllowed(t *testing.T) {
	// daemon (uid 1) has gid 1 (daemon) as its primary group in Debian.
	u, err := ParseUsers([]string{"@daemon"})
	require.NoError(t, err)
	assert.True(t, u.Allows(1), "a member of the group by its primary gid")
	assert.False(t, u.Allows(2))
}

func TestProcNetAddr(t *testing.T) {
	ap := netip.MustParseAddrPort("127.0.0.1:1239")
	assert.Equal(t, "0100007F:04D7", procNetAddr(ap, false))
	assert.Equal(t, "0000000000000000FFFF00000100007F:04D7", procNetAddr(ap, true))
	assert.Equal(t, "00000000000000000000000001000000:0050", procNetAddr(netip.MustParseAddrPort("[::1]:80"), true))
}

func TestCheckLocalTCPPeerByUID(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
			l, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer l.Close()
			client, err := net.Dial(network, l.Addr().String())
			require.NoError(t, err)
			defer client.Close()
			server, err := l.Accept()
			require.NoError(t, err)
			defer server.Close()

			peer, err := Access{}.Check(server)
			require.NoError(t, err, "root (this test's uid %d) is allowed", os.Getuid())
			assert.Equal(t, os.Getuid(), peer.UID, "the kernel's table names the client's uid")
			assert.Equal(t, client.LocalAddr().String(), peer.Addr)
		})
	}
}

func TestCheckUnixPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "5.gdb")
	l, err := ListenUnix(path)
	require.NoError(t, err)
	defer l.Close()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	client, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer client.Close()
	server, err := l.Accept()
	require.NoError(t, err)
	defer server.Close()
	peer, err := Access{}.Check(server)
	require.NoError(t, err)
	assert.Equal(t, os.Getuid(), peer.UID)
	assert.Equal(t, "unix", peer.Addr)
}

func TestRefusedErrorText(t *testing.T) {
	err := Access{}.checkLocal(Peer{Addr: "127.0.0.1:40000", UID: 1001})
	require.Error(t, err)
	assert.Equal(t, "refused 127.0.0.1:40000 (uid 1001): uid 1001 is neither root nor in DMLAUNCH_GDB_USERS", err.Error())
}
