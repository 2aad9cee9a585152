package gdbwrap

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFirstPacket(t *testing.T) {
	tests := []struct {
		in       string
		complete bool
		bad      string
	}{
		{"", false, ""},
		{"+", false, ""},
		{"+$qSupported:multiprocess+#c6", true, ""},
		{"$qSupported:multiprocess+#C6", true, ""},
		{"$?#3f", true, ""},
		{"+$qSupp", false, ""},
		{"+$qSupported:multiprocess+#c", false, ""},
		{"+$qSupported:multiprocess+#c7", false, "bad packet checksum"},
		{"+$?#zz", false, "malformed packet checksum"},
		{"GET / HTTP/1.0\r\n\r\n", false, "its first bytes are not a remote-protocol packet"},
		{"\x16\x03\x01", false, "its first bytes are not a remote-protocol packet"},
		{"+$a$b#00", false, "malformed packet"},
	}
	for _, tt := range tests {
		complete, bad := firstPacket([]byte(tt.in))
		assert.Equal(t, tt.complete, complete, "%q", tt.in)
		assert.Equal(t, tt.bad, bad, "%q", tt.in)
	}
}

func TestErrorPacket(t *testing.T) {
	assert.Equal(t, "$E.no#50", string(ErrorPacket("no")))
	p := ErrorPacket("uid 5 $#}*\n")
	complete, bad := firstPacket(p)
	assert.True(t, complete, "%q is a well-formed packet", p)
	assert.Empty(t, bad)
	assert.Equal(t, "$E.uid 5 ?????#", string(p[:len(p)-2]))
}

// pair is a connected loopback TCP pair.
func pair(t *testing.T) (client, server *net.TCPConn) {
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer l.Close()
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	s, err := l.AcceptTCP()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestSniffLeavesThePacketUnread(t *testing.T) {
	client, server := pair(t)
	// gdb's opening, split as it writes it: the ack, then the packet in
	// two pieces.
	go func() {
		for _, part := range []string{"+", "$qSupported:multipro", "cess+#c6"} {
			_, _ = client.Write([]byte(part))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	require.NoError(t, Sniff(server, time.Second))
	buf := make([]byte, 64)
	require.NoError(t, server.SetReadDeadline(time.Now().Add(time.Second)))
	n, err := io.ReadAtLeast(server, buf, len("+$qSupported:multiprocess+#c6"))
	require.NoError(t, err)
	assert.Equal(t, "+$qSupported:multiprocess+#c6", string(buf[:n]), "the next reader gets every byte")
}

func TestSniffDropsWhatIsNotGDB(t *testing.T) {
	tests := []struct {
		name   string
		send   string
		close  bool
		reason string
	}{
		{"silent", "", false, "it sent nothing within"},
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, "not a remote-protocol packet"},
		{"half a packet", "+$qSupported", false, "no complete packet within"},
		{"closed", "", true, "it closed the connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pair(t)
			if tt.send != "" {
				_, err := client.Write([]byte(tt.send))
				require.NoError(t, err)
			}
			if tt.close {
				client.Close()
			}
			start := time.Now()
			err := Sniff(server, 300*time.Millisecond)
			var notGDB *NotGDBError
			require.True(t, errors.As(err, &notGDB), "got %v", err)
			assert.Contains(t, err.Error(), tt.reason)
			assert.Less(t, time.Since(start), 2*time.Second)
		})
	}
}

func TestRateLimit(t *testing.T) {
	var r rateLimit
	now := time.Now()
	for i := 0; i < limitLines; i++ {
		ok, _ := r.allow(now)
		require.True(t, ok, "line %d", i)
	}
	ok, _ := r.allow(now.Add(time.Second))
	assert.False(t, ok, "past the limit")
	ok, _ = r.allow(now.Add(2 * time.Second))
	assert.False(t, ok)
	ok, suppressed := r.allow(now.Add(limitWindow))
	assert.True(t, ok, "a new window")
	assert.Equal(t, 2, suppressed, "the next line tells how many were left out")
}
