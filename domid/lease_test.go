package domid

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary doubles as an allocating process: real processes, each
// with its own pid and start time, contending for the lock.
func TestMain(m *testing.M) {
	switch os.Getenv("DOMID_TEST_HELPER") {
	case "hold":
		helperHold()
	case "churn":
		helperChurn()
	}
	os.Exit(m.Run())
}

func helperAllocator() *Allocator {
	a := NewAllocator(os.Getenv("DOMID_TEST_DIR"))
	a.History = ""
	a.ReuseTimeout = 0
	return a
}

// helperHold takes one lease, prints it and holds it until stdin closes.
func helperHold() {
	self, err := proc.Self()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	l, err := helperAllocator().Acquire(Request{Domid: -1, Kind: "hvm", Holder: self})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(l.Domid)
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// helperChurn takes and releases leases until it is killed.
func helperChurn() {
	self, _ := proc.Self()
	a := helperAllocator()
	prev := -1
	for i := 0; ; i++ {
		// Take the next lease before freeing the last, so a killed holder
		// always leaves a lease behind.
		l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if prev >= 0 {
			_ = a.Release(prev, self)
		}
		prev = l.Domid
		if i == 0 {
			fmt.Println("busy")
		}
	}
}

// read is the lease file as it is, for tests; a damaged one is an error.
func (a *Allocator) read() (State, error) {
	st, damage, missing := a.load()
	switch {
	case damage != "":
		return st, errors.New(damage)
	case missing:
		return st, os.ErrNotExist
	}
	return st, nil
}

func testAllocator(t *testing.T) *Allocator {
	a := NewAllocator(filepath.Join(t.TempDir(), "state"))
	a.History = ""
	return a
}

func self(t *testing.T) proc.Identity {
	id, err := proc.Self()
	require.NoError(t, err)
	return id
}

func TestAcquireChoosesFreeDomids(t *testing.T) {
	a := testAllocator(t)
	me := self(t)
	var got []int
	for range 3 {
		l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
		require.NoError(t, err)
		assert.True(t, l.Allocated)
		got = append(got, l.Domid)
	}
	assert.Equal(t, []int{1, 2, 3}, got)

	fi, err := os.Stat(a.Dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "state dir is created 0700")
	fi, err = os.Stat(filepath.Join(a.Dir, LeaseFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestReleasedDomidCoolsDown(t *testing.T) {
	a := testAllocator(t)
	me := self(t)
	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	require.NoError(t, a.Release(l.Domid, me))
	a.Next(t, FirstGuest)
	l2, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	assert.NotEqual(t, l.Domid, l2.Domid, "a domid freed under the reuse timeout is not handed out")

	a.ReuseTimeout = 0
	a.Next(t, FirstGuest)
	l3, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	assert.Equal(t, l.Domid, l3.Domid, "with LIBXL_DOMID_REUSE_TIMEOUT=0 it is reused at once")
}

// Next rewinds the allocator's cursor, to test reuse decisions directly.
func (a *Allocator) Next(t *testing.T, next int) {
	require.NoError(t, a.update(false, func(st *State, _ float64) error { st.Next = next; return nil }))
}

func TestLibxlHistoryIsSkipped(t *testing.T) {
	a := testAllocator(t)
	a.History = filepath.Join(t.TempDir(), "domid-history")
	now := monotonic()
	require.NoError(t, os.WriteFile(a.History, fmt.Appendf(nil, "%.3f 1\n%.3f 2\ngarbage\n%.3f 3\n", now-5, now-1, now-3600), 0o600))
	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
	require.NoError(t, err)
	assert.Equal(t, 3, l.Domid, "1 and 2 died lately, 3 an hour ago")
}

func TestGivenDomidHeldTwiceIsRefused(t *testing.T) {
	a := testAllocator(t)
	me := self(t)
	_, err := a.Acquire(Request{Domid: 5, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	_, err = a.Acquire(Request{Domid: 5, Kind: "hvm", Holder: me})
	var held *HeldError
	require.True(t, errors.As(err, &held), "got %v", err)
	assert.Contains(t, err.Error(), fmt.Sprintf("held by process %d", me.PID))
	assert.Contains(t, err.Error(), "domain 5 already has a live hvm device model")

	_, err = a.Acquire(Request{Domid: 5, Kind: "stubdom-dm", Holder: me})
	assert.NoError(t, err, "another kind for the same domid is allowed")

	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
	require.NoError(t, err)
	assert.NotEqual(t, 5, l.Domid, "a toolstack-given domid is never allocated")
}

func TestDeadHolderIsReaped(t *testing.T) {
	a := testAllocator(t)
	a.ReuseTimeout = 0
	cmd := exec.Command("true")
	require.NoError(t, cmd.Start())
	dead, err := proc.Of(cmd.Process.Pid)
	if err != nil { // it may already be gone: make up an identity
		dead = proc.Identity{PID: cmd.Process.Pid, StartTime: 1}
	}
	require.NoError(t, cmd.Wait())
	_, err = a.Acquire(Request{Domid: 9, Kind: "hvm", Holder: dead})
	require.NoError(t, err)

	recycled := self(t)
	recycled.StartTime++ // the same pid, another process
	_, err = a.Acquire(Request{Domid: 10, Kind: "hvm", Holder: recycled})
	require.NoError(t, err)

	st, err := a.List()
	require.NoError(t, err)
	assert.Empty(t, st.Leases, "leases of dead holders, and of a pid now used by another process, are gone")
	_, err = a.Acquire(Request{Domid: 9, Kind: "hvm", Holder: self(t)})
	assert.NoError(t, err)
}

func TestOnlyConflictingHoldersAreCheckedBetweenReaps(t *testing.T) {
	a := testAllocator(t)
	a.ReuseTimeout = 0
	dead := self(t)
	dead.StartTime++ // the same pid, another process: no longer alive
	for _, d := range []int{9, 11} {
		_, err := a.Acquire(Request{Domid: d, Kind: "hvm", Holder: dead})
		require.NoError(t, err)
	}

	_, err := a.Acquire(Request{Domid: 9, Kind: "hvm", Holder: self(t)})
	require.NoError(t, err, "a dead holder of the same domid does not refuse a launch")
	st, err := a.read()
	require.NoError(t, err)
	require.Len(t, st.Leases, 2)
	holders := map[int]proc.Identity{}
	for _, l := range st.Leases {
		holders[l.Domid] = l.Holder
	}
	assert.Equal(t, self(t), holders[9], "domain 9 has its new holder")
	assert.Equal(t, dead, holders[11], "domain 11's dead holder waits for the next full reap")

	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
	require.NoError(t, err)
	assert.NotEqual(t, 11, l.Domid, "until then its domid stays busy")

	st, err = a.List()
	require.NoError(t, err)
	for _, l := range st.Leases {
		assert.NotEqual(t, 11, l.Domid, "a full reap drops it")
	}
}

func TestPeekTellsWhatAcquireTakes(t *testing.T) {
	a := testAllocator(t)
	dead := self(t)
	dead.StartTime++
	for _, holder := range []proc.Identity{self(t), dead, self(t)} {
		want, err := a.Peek()
		require.NoError(t, err)
		l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: holder})
		require.NoError(t, err)
		assert.Equal(t, want, l.Domid)
	}
}

func TestReapDue(t *testing.T) {
	tests := []struct {
		name   string
		reaped float64
		now    float64
		due    bool
	}{
		{name: "never reaped", reaped: 0, now: 100, due: true},
		{name: "just reaped", reaped: 100, now: 101, due: false},
		{name: "interval passed", reaped: 100, now: 100 + reapInterval.Seconds(), due: true},
		{name: "clock restarted by a reboot", reaped: 5000, now: 30, due: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := State{Reaped: tt.reaped}
			assert.Equal(t, tt.due, st.reapDue(tt.now))
		})
	}
}

func TestManualLeaseAndRelease(t *testing.T) {
	a := testAllocator(t)
	l, err := a.Acquire(Request{Domid: -1, Kind: "manual"})
	require.NoError(t, err)
	st, err := a.List()
	require.NoError(t, err)
	require.Len(t, st.Leases, 1, "a lease without holder lasts until released")
	require.NoError(t, a.Release(l.Domid, proc.Identity{}))
	err = a.Release(l.Domid, proc.Identity{})
	assert.ErrorIs(t, err, ErrNotLeased)
}

func TestExhausted(t *testing.T) {
	a := testAllocator(t)
	st := State{Version: 1, Next: 1}
	for d := FirstGuest; d <= LastGuest; d++ {
		st.Leases = append(st.Leases, Lease{Domid: d, Kind: "manual"})
	}
	require.NoError(t, statedir.Ensure(a.Dir))
	require.NoError(t, a.write(st))
	_, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
	assert.ErrorIs(t, err, ErrExhausted)
}

func TestUnsafeStateDirRefused(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "real")
	require.NoError(t, os.Mkdir(target, 0o700))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(target, link))
	loose := filepath.Join(base, "loose")
	require.NoError(t, os.Mkdir(loose, 0o700))
	require.NoError(t, os.Chmod(loose, 0o777))

	cases := map[string]string{link: "symbolic link", loose: "writable by others"}
	if os.Geteuid() == 0 {
		foreign := filepath.Join(base, "foreign")
		require.NoError(t, os.Mkdir(foreign, 0o700))
		require.NoError(t, os.Chown(foreign, 65534, 65534))
		cases[foreign] = "owned by uid 65534"
	}
	for dir, want := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			a := NewAllocator(dir)
			_, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
			require.Error(t, err)
			assert.ErrorIs(t, err, statedir.ErrUnsafe)
			assert.Contains(t, err.Error(), want)
			_, statErr := os.Stat(filepath.Join(dir, LeaseFile))
			assert.True(t, os.IsNotExist(statErr), "nothing written into a refused directory")
			_, err = a.List()
			assert.ErrorIs(t, err, statedir.ErrUnsafe, "nor read from one")
		})
	}
}

func helper(t *testing.T, mode, dir string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DOMID_TEST_HELPER="+mode, "DOMID_TEST_DIR="+dir)
	return cmd
}

func Test64ConcurrentProcessesGetDistinctDomids(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	const n = 64
	type result struct {
		line string
		err  error
	}
	cmds := make([]*exec.Cmd, n)
	stdins := make([]interface{ Close() error }, n)
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		cmd := helper(t, "hold", dir)
		in, err := cmd.StdinPipe()
		require.NoError(t, err)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		cmds[i], stdins[i] = cmd, in
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := bufio.NewReader(out).ReadString('\n')
			results[i] = result{line, err}
		}()
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, r := range results {
		require.NoError(t, r.err, "helper %d", i)
		d, err := strconv.Atoi(r.line[:len(r.line)-1])
		require.NoError(t, err, "helper %d printed %q", i, r.line)
		assert.False(t, seen[d], "domid %d handed out twice", d)
		assert.GreaterOrEqual(t, d, FirstGuest)
		assert.LessOrEqual(t, d, LastGuest)
		seen[d] = true
	}
	assert.Len(t, seen, n)

	a := NewAllocator(dir)
	st, err := a.List()
	require.NoError(t, err)
	assert.Len(t, st.Leases, n, "every holder still runs and holds its lease")

	for i := range n {
		stdins[i].Close()
		require.NoError(t, cmds[i].Wait())
	}
	a.ReuseTimeout = 0
	st, err = a.List()
	require.NoError(t, err)
	assert.Empty(t, st.Leases, "leases come back when their holders exit")
}

func TestSIGKILLedAllocatorsNeverCorruptState(t *testing.T) {
	if testing.Short() {
		t.Skip("a stress test of 128 killed processes: skipped under -short")
	}
	dir := filepath.Join(t.TempDir(), "state")
	const procs, rounds = 16, 8
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var pids []int
	for round := range rounds {
		var cmds []*exec.Cmd
		for range procs {
			cmd := helper(t, "churn", dir)
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			cmds = append(cmds, cmd)
			pids = append(pids, cmd.Process.Pid)
			line, err := bufio.NewReader(out).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "busy\n", line, "the helper allocates before it is killed")
		}
		for _, cmd := range cmds {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		}
		for _, cmd := range cmds {
			err := cmd.Wait()
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "round %d: helper ended with %v, not SIGKILL", round, err)
			ws := exit.Sys().(syscall.WaitStatus)
			assert.True(t, ws.Signaled(), "round %d: helper exited on its own (%v): it hit an error", round, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, LeaseFile))
		require.NoError(t, err)
		_, err = unmarshalState(b)
		require.NoError(t, err, "round %d: lease file does not parse:\n%s", round, b)
	}
	a := NewAllocator(dir)
	a.History = ""
	a.ReuseTimeout = 0
	st, err := a.List()
	require.NoError(t, err)
	assert.Empty(t, st.Leases, "leases of killed holders come back")
	// And the allocator still works.
	l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: self(t)})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, l.Domid, FirstGuest)
	t.Logf("%d allocators killed at random moments over %d rounds", len(pids), rounds)
}

func BenchmarkAcquireRelease(b *testing.B) {
	// On a tmpfs where there is one, as /run is on a Xen host: on a disk
	// this measures fsync.
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "dmlaunch-bench"); err == nil {
		dir = shm
		b.Cleanup(func() { os.RemoveAll(shm) })
	}
	a := NewAllocator(filepath.Join(dir, "state"))
	a.History = ""
	a.ReuseTimeout = 0
	me, _ := proc.Self()
	for b.Loop() {
		l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Release(l.Domid, me); err != nil {
			b.Fatal(err)
		}
	}
}

func TestExpiredReleasesAreForgottenBetweenReaps(t *testing.T) {
	a := testAllocator(t)
	a.ReuseTimeout = 0
	me := self(t)
	for range 50 {
		l, err := a.Acquire(Request{Domid: -1, Kind: "hvm", Holder: me})
		require.NoError(t, err)
		require.NoError(t, a.Release(l.Domid, me))
	}
	st, err := a.read()
	require.NoError(t, err)
	assert.False(t, st.reapDue(monotonic()), "no full reap ran in between")
	assert.LessOrEqual(t, len(st.Released), 1, "releases past the reuse timeout do not pile up in the file")
}

func TestReleasesStayOnePerDomid(t *testing.T) {
	a := testAllocator(t)
	me := self(t)
	for range 50 {
		_, err := a.Acquire(Request{Domid: 5, Kind: "hvm", Holder: me})
		require.NoError(t, err)
		require.NoError(t, a.Release(5, me))
	}
	st, err := a.List()
	require.NoError(t, err)
	require.Len(t, st.Released, 1, "launch after launch of one domain keeps one release entry")
	assert.Equal(t, 5, st.Released[0].Domid)
	assert.Greater(t, a.CoolingUntil(st.Released[0]), 59*time.Second, "the latest release counts")
}
