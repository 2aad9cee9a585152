package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// liveLaunch is dmlaunch in pass-through with the fake QEMU holding, as a
// running device model: the same process, recorded in the registry.
type liveLaunch struct {
	cmd    *exec.Cmd
	done   chan struct{}
	status int
	domid  int
	stderr realtest.SyncBuffer
}

// startLive starts one launch and waits until its QEMU runs (the fake
// wrote its report) or dmlaunch exited (a refusal).
func startLive(t *testing.T, state string, args ...string) *liveLaunch {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	l := &liveLaunch{done: make(chan struct{}), domid: -1}
	l.cmd = exec.Command(dmlaunchBin, args...)
	l.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_STATE_DIR=" + state,
		"DMLAUNCH_QEMU=" + os.Args[0], "FAKE_QEMU_REPORT=" + report, "FAKE_QEMU_HOLD=1",
	}
	l.cmd.Stderr = &l.stderr
	require.NoError(t, l.cmd.Start())
	go func() {
		err := l.cmd.Wait()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			l.status = exit.ExitCode()
		}
		close(l.done)
	}()
	t.Cleanup(func() { l.stop() })
	for {
		if r, ok := readReport(report); ok {
			l.domid, _ = strconv.Atoi(r.Env["XEN_DOMAIN_ID"])
			return l
		}
		select {
		case <-l.done:
			return l
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (l *liveLaunch) running() bool {
	select {
	case <-l.done:
		return false
	default:
		return l.domid >= 0
	}
}

func (l *liveLaunch) stop() {
	if l.cmd.Process != nil {
		_ = l.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-l.done
}

var (
	hvmNoDomid = []string{"-name", "leased", "-machine", "xenfv"}
	hvmDomid   = func(d int) []string {
		return []string{"-xen-domid", strconv.Itoa(d), "-name", "given", "-machine", "xenfv"}
	}
)

// leaseDamage breaks the lease file in one way; old is a copy of the file
// taken after the first launch, for the cases that put an old one back.
type leaseDamage struct {
	name  string
	apply func(t *testing.T, path string, old []byte)
	// aside: the damaged file is kept as domids.damaged.<time>.
	aside bool
}

var leaseDamages = []leaseDamage{
	{"truncated", func(t *testing.T, path string, _ []byte) {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, b[:len(b)*2/3], 0o600))
	}, true},
	{"truncated at a line end", func(t *testing.T, path string, _ []byte) {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		lines := strings.SplitAfter(string(b), "\n")
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines[:len(lines)/2], "")), 0o600))
	}, true},
	{"empty", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.Truncate(path, 0))
	}, true},
	{"garbage", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.WriteFile(path, []byte("\x00\xff{garbage]]\nlease x y\n"), 0o600))
	}, true},
	{"older format, fewer leases", func(t *testing.T, path string, old []byte) {
		// A version 1 file (no boot, no end line) that knows only the
		// first launch, as one written by the previous release.
		var v1 []string
		for _, line := range strings.Split(string(old), "\n") {
			switch {
			case line == "dmlaunch-leases 2":
				v1 = append(v1, "dmlaunch-leases 1")
			case strings.HasPrefix(line, "boot "), line == "end", line == "":
			default:
				v1 = append(v1, line)
			}
		}
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(v1, "\n")+"\n"), 0o600))
	}, false},
	{"old JSON format", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.WriteFile(path, []byte(`{"version":1,"next":1,"leases":[],"released":[]}`), 0o600))
	}, true},
	{"symlink to /dev/zero", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.Remove(path))
		require.NoError(t, os.Symlink("/dev/zero", path))
	}, true},
	{"unreadable: a directory", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.Remove(path))
		require.NoError(t, os.MkdirAll(filepath.Join(path, "sub"), 0o700))
	}, true},
	{"unreadable: a FIFO", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.Remove(path))
		require.NoError(t, syscall.Mkfifo(path, 0o600))
	}, true},
	{"mode 000", func(t *testing.T, path string, _ []byte) {
		// Root reads it anyway; anyone else finds it unreadable.
		require.NoError(t, os.Chmod(path, 0))
	}, os.Geteuid() != 0},
	{"moved aside by hand", func(t *testing.T, path string, _ []byte) {
		require.NoError(t, os.Rename(path, path+".old"))
	}, false},
	{"an old copy put back", func(t *testing.T, path string, old []byte) {
		require.NoError(t, os.WriteFile(path, old, 0o600))
	}, false},
}

// TestLeaseDamageTable damages the lease file under live launches, then
// launches more: every launch that should proceed does, the one that
// duplicates a live domain is refused, and no live domid is handed out
// twice.
func TestLeaseDamageTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts about 200 launches")
	}
	outcomes := []string{}
	for _, dmg := range leaseDamages {
		t.Run(dmg.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			path := filepath.Join(state, domid.LeaseFile)
			var live []*liveLaunch
			first := startLive(t, state, hvmNoDomid...)
			require.True(t, first.running(), "%s", first.stderr.String())
			old, err := os.ReadFile(path)
			require.NoError(t, err)
			live = append(live, first)
			for range 3 {
				live = append(live, startLive(t, state, hvmNoDomid...))
			}
			live = append(live, startLive(t, state, hvmDomid(40)...), startLive(t, state, hvmDomid(41)...))
			for _, l := range live {
				require.True(t, l.running(), "before the damage: %s", l.stderr.String())
			}

			dmg.apply(t, path, old)

			// During the damage: more launches without a domid, one with
			// a domid of its own, and one for a domain already running.
			var after []*liveLaunch
			for range 4 {
				after = append(after, startLive(t, state, hvmNoDomid...))
			}
			given := startLive(t, state, hvmDomid(42)...)
			dup := startLive(t, state, hvmDomid(40)...)

			proceeded, blocked := 0, 0
			for _, l := range append(after, given) {
				if assert.True(t, l.running(), "launch blocked: exit %d: %s", l.status, l.stderr.String()) {
					proceeded++
				} else {
					blocked++
				}
			}
			assert.Equal(t, 42, given.domid)
			assert.False(t, dup.running(), "a second launch for running domain 40 is refused")
			assert.Equal(t, ExitBadInput, dup.status)
			assert.Contains(t, dup.stderr.String(), "domain 40 already has a live hvm device model")

			seen := map[int]int{}
			for _, l := range append(live, after...) {
				seen[l.domid]++
			}
			seen[given.domid]++
			twice := 0
			for d, n := range seen {
				if !assert.Equal(t, 1, n, "domid %d handed out %d times", d, n) {
					twice++
				}
			}
			assert.Len(t, seen, 11)

			asides, _ := filepath.Glob(path + ".damaged.*")
			logged := after[0].stderr.String()
			if dmg.aside {
				assert.Len(t, asides, 1, "the damaged file is kept aside")
				assert.Contains(t, logged, "is damaged")
				assert.Contains(t, logged, "rebuilt from 6 registry records (6 of them live launches")
			} else {
				assert.Empty(t, asides)
			}
			// The repaired file is whole again and holds every live launch.
			st, err := domid.NewAllocator(state).List()
			require.NoError(t, err)
			assert.Empty(t, st.Damage)
			leased := map[int]bool{}
			for _, l := range st.Leases {
				assert.False(t, leased[l.Domid], "domid %d leased twice", l.Domid)
				leased[l.Domid] = true
			}
			if dmg.name == "an old copy put back" {
				// Only what launches ran into is put back (the domids
				// the allocator passed over, domain 40 by the refused
				// duplicate); the rest stays in the registry, which both
				// consult.
				assert.Len(t, st.Leases, 10)
			} else {
				assert.Len(t, st.Leases, 11)
			}
			outcomes = append(outcomes, fmt.Sprintf("%-28s launches proceeded %d, wrongly blocked %d, duplicate refused %v, domids handed out twice %d, kept aside %d",
				dmg.name, proceeded, blocked, dup.status == ExitBadInput, twice, len(asides)))
		})
	}
	for _, o := range outcomes {
		t.Log(o)
	}
}

// TestLeaseRebuildUnderLoad: 64 live launches, the lease file destroyed,
// 64 more launches at once: 128 distinct domids.
func TestLeaseRebuildUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 128 launches")
	}
	state := filepath.Join(t.TempDir(), "state")
	startMany := func(n int) []*liveLaunch {
		out := make([]*liveLaunch, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { out[i] = startLive(t, state, hvmNoDomid...) })
		}
		wg.Wait()
		return out
	}
	first := startMany(64)
	require.NoError(t, os.Remove(filepath.Join(state, domid.LeaseFile)))
	second := startMany(64)
	seen := map[int]bool{}
	for i, l := range append(first, second...) {
		require.True(t, l.running(), "launch %d: exit %d: %s", i, l.status, l.stderr.String())
		assert.False(t, seen[l.domid], "domid %d handed out twice", l.domid)
		seen[l.domid] = true
	}
	assert.Len(t, seen, 128)
	rebuilt := 0
	for _, l := range second {
		if strings.Contains(l.stderr.String(), "is missing; rebuilt from 64 registry records (64 of them live launches") {
			rebuilt++
		}
	}
	assert.Equal(t, 1, rebuilt, "one launch rebuilt the file, and said so")
}

// registryDamage breaks or adds one record while launches run.
type registryDamage struct {
	name  string
	apply func(t *testing.T, state string, victim *liveLaunch) (badName string)
}

var registryDamages = []registryDamage{
	{"truncated", func(t *testing.T, state string, victim *liveLaunch) string {
		path := filepath.Join(state, registry.FileName(victim.domid, "hvm"))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, b[:len(b)/2], 0o600))
		return filepath.Base(path)
	}},
	{"oversized", func(t *testing.T, state string, _ *liveLaunch) string {
		path := filepath.Join(state, "77.json")
		require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte(" "), registry.MaxSize+1), 0o600))
		return "77.json"
	}},
	{"symlink to a device", func(t *testing.T, state string, _ *liveLaunch) string {
		require.NoError(t, os.Symlink("/dev/zero", filepath.Join(state, "78.json")))
		return "78.json"
	}},
	{"a FIFO", func(t *testing.T, state string, _ *liveLaunch) string {
		require.NoError(t, syscall.Mkfifo(filepath.Join(state, "79.json"), 0o600))
		return "79.json"
	}},
	{"another uid's", func(t *testing.T, state string, victim *liveLaunch) string {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a file away")
		}
		// A copy of a live record under another domid, owned by nobody:
		// not dmlaunch's, so not trusted.
		b, err := os.ReadFile(filepath.Join(state, registry.FileName(victim.domid, "hvm")))
		require.NoError(t, err)
		path := filepath.Join(state, "80.json")
		fake := strings.Replace(string(b), `"domid":`+strconv.Itoa(victim.domid), `"domid":80`, 1)
		require.NoError(t, os.WriteFile(path, []byte(fake), 0o600))
		require.NoError(t, os.Chown(path, 65534, 65534))
		return "80.json"
	}},
}

// TestRegistryDamageTable: one bad record is named and skipped, the others
// are listed, and launches go on.
func TestRegistryDamageTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts launches")
	}
	var outcomes []string
	for _, dmg := range registryDamages {
		t.Run(dmg.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			var live []*liveLaunch
			for range 3 {
				live = append(live, startLive(t, state, hvmNoDomid...))
			}
			live = append(live, startLive(t, state, hvmDomid(40)...))
			bad := dmg.apply(t, state, live[0])

			done := make(chan struct{})
			var listing inventory.Listing
			var err error
			go func() { listing, err = inventory.Scan(state); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("listing the registry hangs")
			}
			require.NoError(t, err)
			require.Len(t, listing.Bad, 1)
			assert.Equal(t, bad, filepath.Base(listing.Bad[0].Path), "the bad record is named: %v", listing.Bad[0])
			var listed []int
			for _, e := range listing.Entries {
				listed = append(listed, e.Domid)
			}
			for _, l := range live {
				if filepath.Base(registry.FileName(l.domid, "hvm")) != bad {
					assert.Contains(t, listed, l.domid, "a good record is still listed")
				}
			}

			more := startLive(t, state, hvmNoDomid...)
			given := startLive(t, state, hvmDomid(41)...)
			assert.True(t, more.running(), "%s", more.stderr.String())
			assert.True(t, given.running(), "%s", given.stderr.String())
			dup := startLive(t, state, hvmDomid(40)...)
			assert.False(t, dup.running())
			seen, twice := map[int]bool{}, 0
			for _, l := range append(live, more, given) {
				if !assert.False(t, seen[l.domid], "domid %d handed out twice", l.domid) {
					twice++
				}
				seen[l.domid] = true
			}
			outcomes = append(outcomes, fmt.Sprintf("record %-22s named %s, listed %d other records, launches proceeded %d of 2, duplicate refused %v, domids handed out twice %d",
				dmg.name, bad, len(listing.Entries), btoi(more.running())+btoi(given.running()), !dup.running(), twice))
		})
	}
	for _, o := range outcomes {
		t.Log(o)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestEndedRecordsGoOnTheNextLaunch: a pass-through launch leaves its
// record when QEMU exits (it has ended); the next launch of that domid
// replaces it, and a backend's ended record goes with the device model's
// next launch.
func TestEndedRecordsGoOnTheNextLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts launches")
	}
	state := filepath.Join(t.TempDir(), "state")
	qdisk := []string{"-xen-domid", "6", "-xen-attach", "-M", "xenpv", "-monitor", "/dev/null", "-serial", "/dev/null", "-parallel", "/dev/null"}
	for _, args := range [][]string{qdisk, hvmDomid(6)} {
		l := startLive(t, state, args...)
		require.True(t, l.running(), "%s", l.stderr.String())
		l.stop()
	}
	entries, err := inventory.List(state)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the backend's ended record went with the device model's launch")
	assert.Equal(t, "6.json", filepath.Base(entries[0].Path))
	assert.Equal(t, registry.Ended, entries[0].State, "QEMU exited: the launch has ended")

	again := startLive(t, state, hvmDomid(6)...)
	require.True(t, again.running(), "%s", again.stderr.String())
	entries, err = inventory.List(state)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, registry.Running, entries[0].State, "the next launch of the domid replaced the ended record")
	assert.Equal(t, again.cmd.Process.Pid, entries[0].Launcher.PID)
}
