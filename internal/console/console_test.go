package console

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func readFor(t *testing.T, f *os.File, want int) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		require.NoError(t, f.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		n, _ := f.Read(buf)
		got = append(got, buf[:n]...)
	}
	return got
}

func TestRelayKeepsEveryByteAndCarriesInput(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	c, err := Open(logPath)
	require.NoError(t, err)
	defer c.Close()
	assert.Regexp(t, `^/dev/pts/\d+$`, c.QEMUPath)
	assert.Regexp(t, `^/dev/pts/\d+$`, c.UserPath)
	assert.NotEqual(t, c.QEMUPath, c.UserPath)

	// QEMU's side, as QEMU opens it.
	qemu, err := os.OpenFile(c.QEMUPath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	// Every byte value, and more than a pty buffer holds, with nobody on
	// the users' pty.
	var out bytes.Buffer
	for i := 0; out.Len() < 256*1024; i++ {
		out.WriteByte(byte(i))
	}
	_, err = qemu.Write(out.Bytes())
	require.NoError(t, err)
	select {
	case <-c.FirstByte():
	case <-time.After(5 * time.Second):
		t.Fatal("no first byte")
	}

	// A user attaches later and types: it reaches QEMU.
	user, err := os.OpenFile(c.UserPath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer user.Close()
	_, err = user.Write([]byte("typed\r"))
	require.NoError(t, err)
	assert.Equal(t, "typed\r", string(readFor(t, qemu, 6)), "input goes to QEMU unchanged (raw mode: no CR/LF mapping)")

	// QEMU goes away; the log holds everything, byte for byte.
	qemu.Close()
	c.Drain()
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(out.Bytes(), b), "log has %d bytes, want %d, identical", len(b), out.Len())
	assert.Equal(t, int64(out.Len()), c.Logged())
}

func TestLogIsAppended(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	require.NoError(t, os.WriteFile(logPath, []byte("earlier run\n"), 0o640))
	c, err := Open(logPath)
	require.NoError(t, err)
	qemu, err := os.OpenFile(c.QEMUPath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	_, _ = io.WriteString(qemu, "this run\n")
	<-c.FirstByte()
	qemu.Close()
	c.Drain()
	require.NoError(t, c.Close())
	b, _ := os.ReadFile(logPath)
	assert.Equal(t, "earlier run\nthis run\n", string(b))
	fi, _ := os.Stat(logPath)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
}
