package inventory

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() registry.Record {
	return registry.Record{Domid: 5, Name: "web 1", Kind: "hvm", Mode: "pass-through", QEMU: "/q", Argv: []string{"-name", "web 1"},
		Started: time.Date(2026, 11, 21, 13, 0, 0, 1, time.UTC)}
}

func TestWriteListRemove(t *testing.T) {
	dir := t.TempDir()
	me, err := proc.Self()
	require.NoError(t, err)
	gone := exec.Command("true")
	require.NoError(t, gone.Run())

	live := sample()
	live.Launcher, live.QEMUPID = me, me.PID
	path, err := registry.Write(dir, live)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "5.json"), path)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	ended := sample()
	ended.Domid, ended.Kind = 0, "qdisk"
	ended.Launcher = proc.Identity{PID: gone.Process.Pid, StartTime: 1}
	_, err = registry.Write(dir, ended)
	require.NoError(t, err)
	stale := sample()
	stale.Domid, stale.Mode, stale.Launcher, stale.QEMUPID = 7, "gdb", ended.Launcher, 1
	_, err = registry.Write(dir, stale)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "leases.lock"), nil, 0o600), "other files are ignored")

	entries, err := List(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3)
	assert.Equal(t, 0, entries[0].Domid)
	assert.True(t, strings.HasSuffix(entries[0].Path, "0-qdisk.json"))
	assert.Equal(t, registry.Ended, entries[0].State, "a pass-through QEMU that exited has ended")
	assert.True(t, entries[0].Stale, "stale is set for every launch that is gone, so select(.stale|not) takes live ones only")
	assert.Equal(t, registry.Running, entries[1].State)
	assert.False(t, entries[1].Stale)
	assert.Equal(t, registry.Stale, entries[2].State, "a debug-mode launcher gone without removing its record")
	assert.True(t, entries[2].Stale)

	// A record replaced by a later launch is not removed by the earlier one.
	replaced := live
	replaced.Launcher.StartTime++
	require.NoError(t, registry.Remove(dir, replaced))
	assert.FileExists(t, path)
	require.NoError(t, registry.Remove(dir, live))
	assert.NoFileExists(t, path)
	require.NoError(t, registry.Remove(dir, live), "removing twice is fine")
}
