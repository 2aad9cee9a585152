package registry

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A live record written while SweepEnded removes the ended one it
// replaces must survive: backends write theirs outside the lease lock, so
// nothing else keeps the writer out of the sweep's read-compare-remove.
// The race is narrow (a few in ten thousand rounds lost the live record
// when the remove was a plain unlink after the compare); the rounds run
// for a bounded time.
func TestSweepEndedNeverRemovesARecordWrittenMeanwhile(t *testing.T) {
	dir := t.TempDir()
	// On tmpfs (records live in /run) the writer does not fsync: more
	// rounds in the time.
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		d, err := os.MkdirTemp("/dev/shm", "registry")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	self, err := proc.Self()
	require.NoError(t, err)
	gone := proc.Identity{PID: gonePID(t), StartTime: 1}
	ended := Record{Domid: 0, Kind: "qdisk", Mode: ModePassThrough, Launcher: gone}
	live := Record{Domid: 0, Kind: "qdisk", Mode: ModePassThrough, Launcher: self}
	path := filepath.Join(dir, FileName(0, "qdisk"))

	const rounds, budget = 40000, 8 * time.Second
	deadline := time.Now().Add(budget)
	lost, swept, done := 0, 0, 0
	for ; done < rounds && time.Now().Before(deadline); done++ {
		_, err := Write(dir, ended)
		require.NoError(t, err)
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			swept += SweepEnded(dir, "")
		}()
		go func() {
			defer wg.Done()
			<-start
			// The sweep reads the directory, the record and /proc
			// before it removes the record: the write starts at a
			// spread of moments into it.
			for spin := time.Now().Add(time.Duration(done%64) * time.Microsecond); time.Now().Before(spin); {
			}
			_, err := Write(dir, live)
			assert.NoError(t, err)
		}()
		close(start)
		wg.Wait()
		b, err := os.ReadFile(path)
		if err != nil {
			lost++
			continue
		}
		require.Equal(t, string(live.appendJSON(nil)), string(b), "round %d: the live record is the one left", done)
	}
	t.Logf("%d rounds, %d sweeps removed the ended record first", done, swept)
	assert.Zero(t, lost, "live records lost in %d rounds", done)
	assert.Positive(t, swept, "some sweeps ran before the write and removed the ended record")
	leftovers, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	assert.Equal(t, []string{path}, leftovers, "nothing taken aside is left behind")
}
