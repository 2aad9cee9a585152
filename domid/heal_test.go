package domid

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAnEarlierBootsLeasesAndCoolingAreDropped(t *testing.T) {
	a := testAllocator(t)
	require.NoError(t, os.MkdirAll(a.Dir, 0o700))
	me := self(t)
	now := monotonic()
	old := State{Version: formatVersion, Next: 1, Boot: "an-earlier-boot", Reaped: now,
		Leases: []Lease{
			{Domid: 1, Kind: "hvm", Holder: me, Since: time.Now()}, // the same pid and start time by chance
			{Domid: 2, Kind: "manual", Since: time.Now()},
		},
		Released: []Released{{Domid: 3, At: now - 1}},
	}
	require.NoError(t, a.write(old))
	st, err := a.List()
	require.NoError(t, err)
	require.Len(t, st.Leases, 1, "leases of processes from another boot are gone; one taken by hand stays")
	assert.Equal(t, 2, st.Leases[0].Domid)
	assert.Empty(t, st.Released, "cooling times from another boot's clock mean nothing")

	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	assert.Equal(t, 1, l.Domid)
	st, err = a.read()
	require.NoError(t, err)
	assert.Equal(t, bootID(), st.Boot, "the file records this boot")
	assert.NotEmpty(t, st.Boot)
}

func TestFreeRefusesALiveHolder(t *testing.T) {
	a := testAllocator(t)
	me := self(t)
	_, err := a.Acquire(Request{Domid: 5, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	err = a.Free(5, false)
	var live *LiveHolderError
	require.ErrorAs(t, err, &live)
	assert.Contains(t, err.Error(), "domain 5 is held by process "+strconv.Itoa(me.PID))
	st, err := a.read()
	require.NoError(t, err)
	assert.Len(t, st.Leases, 1, "nothing was released")
	require.NoError(t, a.Free(5, true))
}

func TestLeftoversOfKilledWritersAreRemoved(t *testing.T) {
	a := testAllocator(t)
	var warned []string
	a.Warn = func(m string) { warned = append(warned, m) }
	_, err := a.Acquire(Request{Domid: 5, Kind: "hvm", Holder: self(t)})
	require.NoError(t, err)
	dead := deadPID(t)
	leftovers := []string{LeaseFile + ".new." + dead + ".3.abc", "5.json.new." + dead + ".1.x"}
	for _, n := range leftovers {
		require.NoError(t, os.WriteFile(filepath.Join(a.Dir, n), []byte("half"), 0o600))
	}
	running := "7.json.new." + strconv.Itoa(os.Getpid()) + ".1.x"
	require.NoError(t, os.WriteFile(filepath.Join(a.Dir, running), nil, 0o600))
	_, err = a.Reap()
	require.NoError(t, err)
	for _, n := range leftovers {
		assert.NoFileExists(t, filepath.Join(a.Dir, n))
	}
	assert.FileExists(t, filepath.Join(a.Dir, running), "a writer that still runs keeps its file")
	assert.Contains(t, strings.Join(warned, "\n"), "removed 2 temporary files left by killed writers")
}

func deadPID(t *testing.T) string {
	dead := self(t)
	for pid := 4194304; pid > 1000; pid-- { // from the top of the pid space down
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			dead.PID = pid
			break
		}
	}
	return strconv.Itoa(dead.PID)
}

func TestDamagedFileIsKeptAsideAndRebuiltFromTheRegistry(t *testing.T) {
	a := testAllocator(t)
	var warned []string
	a.Warn = func(m string) { warned = append(warned, m) }
	me := self(t)
	gone := me
	gone.StartTime++
	require.NoError(t, os.MkdirAll(a.Dir, 0o700))
	for d, holder := range map[int]proc.Identity{3: me, 4: gone} {
		_, err := registry.Write(a.Dir, registry.Record{Domid: d, Name: "vm" + strconv.Itoa(d), Kind: "hvm", Launcher: holder})
		require.NoError(t, err)
	}
	garbage := []byte("dmlaunch-leases 2\nlease 9 \"manual\" 0 0 1 0 \"kept\"\n\x00\x00")
	require.NoError(t, os.WriteFile(filepath.Join(a.Dir, LeaseFile), garbage, 0o600))

	st, err := a.List()
	require.NoError(t, err)
	assert.Contains(t, st.Damage, "is damaged (line 3: unknown record")

	a.ReuseTimeout = time.Minute
	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	assert.Equal(t, 1, l.Domid)
	st, err = a.read()
	require.NoError(t, err)
	var held []int
	for _, l := range st.Leases {
		held = append(held, l.Domid)
	}
	assert.ElementsMatch(t, []int{1, 3, 9}, held, "the live launch's record and the hand-taken lease came back")
	assert.Equal(t, []Released{{Domid: 4, At: st.Released[0].At}}, st.Released, "the dead launch's domid cools down")

	asides, err := filepath.Glob(filepath.Join(a.Dir, LeaseFile+".damaged.*"))
	require.NoError(t, err)
	require.Len(t, asides, 1)
	kept, err := os.ReadFile(asides[0])
	require.NoError(t, err)
	assert.Equal(t, garbage, kept, "the damaged file is kept as it was")
	require.Len(t, warned, 1)
	assert.Contains(t, warned[0], "kept as "+asides[0])
	assert.Contains(t, warned[0], "rebuilt from 2 registry records (1 of them live launches")
}

func TestALockFileThatIsNoFileIsSetAside(t *testing.T) {
	for name, damage := range map[string]func(path string) error{
		"symlink":   func(path string) error { return os.Symlink("/dev/null", path) },
		"directory": func(path string) error { return os.Mkdir(path, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			a := testAllocator(t)
			require.NoError(t, os.MkdirAll(a.Dir, 0o700))
			lock := filepath.Join(a.Dir, lockFile)
			require.NoError(t, damage(lock))
			var warned []string
			a.Warn = func(m string) { warned = append(warned, m) }
			_, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
			require.NoError(t, err)
			fi, err := os.Lstat(lock)
			require.NoError(t, err)
			assert.True(t, fi.Mode().IsRegular())
			assert.Contains(t, strings.Join(warned, "\n"), "was not a regular file; kept as")
		})
	}
}
