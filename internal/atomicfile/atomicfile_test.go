package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// dirs are a disk-backed directory and, where the machine has one, a
// tmpfs, so that both the fsyncing and the RAM-only paths run.
func dirs(t *testing.T) map[string]string {
	out := map[string]string{"default temp dir": t.TempDir()}
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		d, err := os.MkdirTemp("/dev/shm", "atomicfile")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(d) })
		out["tmpfs"] = d
	}
	return out
}

func TestWriteReplacesWhole(t *testing.T) {
	for name, dir := range dirs(t) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "state")
			require.NoError(t, Write(path, []byte("first\n"), 0o600))
			require.NoError(t, Write(path, []byte("second, longer\n"), 0o600))

			got, err := ReadSmall(path)
			require.NoError(t, err)
			assert.Equal(t, "second, longer\n", string(got))
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "no temporary file is left behind")
		})
	}
}

func TestWriteKeepsModeDespiteUmask(t *testing.T) {
	old := unix.Umask(0o277)
	defer unix.Umask(old)
	path := filepath.Join(t.TempDir(), "state")
	require.NoError(t, Write(path, []byte("x"), 0o600))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestWriteFailsCleanly(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "missing", "state"), []byte("x"), 0o600)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestReadSmallSizes(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4095, 4096, 4097, 3 * 4096, 100000} {
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		path := filepath.Join(dir, "f")
		require.NoError(t, os.WriteFile(path, data, 0o600))
		got, err := ReadSmall(path)
		require.NoError(t, err, "size %d", size)
		assert.Equal(t, data, got, "size %d", size)
	}
	_, err := ReadSmall(filepath.Join(dir, "none"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestVolatile(t *testing.T) {
	for name, dir := range dirs(t) {
		var st unix.Statfs_t
		require.NoError(t, unix.Statfs(dir, &st))
		assert.Equal(t, st.Type == unix.TMPFS_MAGIC, volatile(dir), name)
	}
}

func TestReadFD(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		limit  int
		want   string
	}{
		{"empty", nil, 8, ""},
		{"under the limit", []string{"1234"}, 8, "1234"},
		{"at the limit", []string{"12345678"}, 8, "12345678"},
		{"over the limit: limit+1 bytes, no more", []string{"123456789abc"}, 8, "123456789"},
		// A pipe gives one write per read: short reads are not the end.
		{"short reads", []string{"12", "34", "56"}, 8, "123456"},
		{"past a 4 KiB buffer", []string{strings.Repeat("x", 5000)}, 6000, strings.Repeat("x", 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p [2]int
			require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
			defer unix.Close(p[0])
			go func() {
				defer unix.Close(p[1])
				for _, c := range tc.chunks {
					_, _ = unix.Write(p[1], []byte(c))
					time.Sleep(5 * time.Millisecond)
				}
			}()
			got, err := ReadFD(p[0], tc.limit)
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
		})
	}
}
