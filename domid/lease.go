package domid

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"golang.org/x/sys/unix"
)

// File names inside the state directory.
const (
	LeaseFile = "domids"
	lockFile  = "domids.lock"
	// DefaultHistory is libxl's record of recently destroyed domains.
	DefaultHistory = "/var/run/xen/domid-history"
	// DefaultReuseTimeout is libxl's LIBXL_DOMID_REUSE_TIMEOUT default.
	DefaultReuseTimeout = 60 * time.Second
	// reapInterval is how often an update checks every lease's holder.
	// A check reads /proc/<pid>/stat, about 12 us, and every running
	// device model holds a lease: checking them all on every launch would
	// make launches slower the more domains run. In between, only the
	// leases that could refuse a request are checked.
	reapInterval = 10 * time.Second
)

// Lease is one domid held by one process.
type Lease struct {
	Domid int    `json:"domid"`
	Kind  string `json:"kind"`
	Name  string `json:"name,omitempty"`
	// Holder is the process whose death ends the lease; PID 0 is a lease
	// taken by hand (dmctl domid alloc) and held until released.
	Holder proc.Identity `json:"holder"`
	// Allocated is false for a domid the toolstack gave, which is
	// recorded to refuse a second launch for it.
	Allocated bool      `json:"allocated"`
	Since     time.Time `json:"since"`
}

// Live reports whether the lease's holder is still running.
func (l Lease) Live() bool { return l.Holder.PID == 0 || l.Holder.Alive() }

// Released is a domid that came free, kept for the reuse timeout.
type Released struct {
	Domid int `json:"domid"`
	// At is CLOCK_MONOTONIC seconds, as in libxl's domid-history.
	At float64 `json:"at"`
}

// State is the content of the lease file.
type State struct {
	Version  int        `json:"version"`
	Next     int        `json:"next"`
	Leases   []Lease    `json:"leases"`
	Released []Released `json:"released"`
	// Reaped is when every holder was last checked (CLOCK_MONOTONIC
	// seconds); 0 for never.
	Reaped float64 `json:"reaped"`
}

// Allocator hands out domids for launches that carry none. Every change
// happens under an exclusive flock and lands by writing a new file and
// renaming it over the old one (atomicfile.Write), so a process killed at
// any moment leaves either the old state or the new one.
type Allocator struct {
	Dir          string
	History      string        // libxl's domid-history; "" to ignore
	ReuseTimeout time.Duration // how long a freed domid stays unused
}

// NewAllocator uses libxl's defaults; LIBXL_DOMID_REUSE_TIMEOUT, read by
// the caller, may change ReuseTimeout.
func NewAllocator(dir string) *Allocator {
	return &Allocator{Dir: dir, History: DefaultHistory, ReuseTimeout: DefaultReuseTimeout}
}

// ReuseTimeoutFromEnv reads LIBXL_DOMID_REUSE_TIMEOUT (seconds) as libxl does.
func ReuseTimeoutFromEnv(v string) (time.Duration, error) {
	if v == "" {
		return DefaultReuseTimeout, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("LIBXL_DOMID_REUSE_TIMEOUT=%q is not a number of seconds", v)
	}
	return time.Duration(n) * time.Second, nil
}

// HeldError refuses a second live launch of one kind for one domid.
type HeldError struct{ Lease Lease }

func (e *HeldError) Error() string {
	who := fmt.Sprintf("process %d", e.Lease.Holder.PID)
	if e.Lease.Holder.PID == 0 {
		who = "a lease taken by hand (dmctl domid release to free it)"
	}
	return fmt.Sprintf("domain %d already has a live %s device model, held by %s since %s",
		e.Lease.Domid, e.Lease.Kind, who, e.Lease.Since.Format(time.RFC3339))
}

// ErrExhausted means every guest domid is held or cooling down.
var ErrExhausted = errors.New("no free domid: every guest domid is leased or was freed too recently")

// ErrNotLeased is returned when releasing a domid nobody holds.
var ErrNotLeased = errors.New("domid is not leased")

// Request asks for a lease. Domid < 0 asks the allocator to choose.
type Request struct {
	Domid  int
	Kind   string
	Name   string
	Holder proc.Identity
}

// Acquire records a lease: on the given domid, refusing one already held
// for the same kind, or on a free domid it chooses.
func (a *Allocator) Acquire(req Request) (Lease, error) {
	var out Lease
	err := a.update(false, func(st *State, now float64) error {
		l := Lease{Domid: req.Domid, Kind: req.Kind, Name: req.Name, Holder: req.Holder, Since: time.Now().UTC()}
		if req.Domid >= 0 {
			conflicts := func(held Lease) bool { return held.Domid == req.Domid && held.Kind == req.Kind }
			st.dropDead(now, conflicts)
			if i := slices.IndexFunc(st.Leases, conflicts); i >= 0 {
				return &HeldError{st.Leases[i]}
			}
		} else {
			// A lease whose holder died since the last full reap keeps
			// its domid busy until the next one: that domid would be
			// cooling down anyway.
			d, err := a.choose(st, now)
			if err != nil {
				return err
			}
			l.Domid, l.Allocated = d, true
			st.Next = d + 1
		}
		st.Leases = append(st.Leases, l)
		out = l
		return nil
	})
	return out, err
}

// Peek tells which domid Acquire would choose now, changing nothing.
func (a *Allocator) Peek() (int, error) {
	st, err := a.read()
	if err != nil {
		return 0, err
	}
	now := monotonic()
	a.tidy(&st, now, false) // as Acquire would
	return a.choose(&st, now)
}

// Release frees every lease on domid held by holder, or by anyone when
// holder is the zero Identity.
func (a *Allocator) Release(domid int, holder proc.Identity) error {
	return a.update(false, func(st *State, now float64) error {
		kept := st.Leases[:0]
		found := false
		for _, l := range st.Leases {
			if l.Domid == domid && (holder == (proc.Identity{}) || l.Holder == holder) {
				found = true
				continue
			}
			kept = append(kept, l)
		}
		st.Leases = kept
		if !found {
			return fmt.Errorf("domain %d: %w", domid, ErrNotLeased)
		}
		st.release(domid, now)
		return nil
	})
}

// List returns the state with dead holders' leases reaped (and the reaping
// saved, so their domids start cooling down now).
func (a *Allocator) List() (State, error) {
	var out State
	err := a.update(true, func(st *State, now float64) error {
		out = *st
		return nil
	})
	return out, err
}

// CoolingUntil tells how many seconds a released domid has left before it
// can be handed out again.
func (a *Allocator) CoolingUntil(r Released) time.Duration {
	left := r.At + a.ReuseTimeout.Seconds() - monotonic()
	if left < 0 {
		return 0
	}
	return time.Duration(left * float64(time.Second))
}

func (a *Allocator) choose(st *State, now float64) (int, error) {
	busy := map[int]bool{}
	for _, l := range st.Leases {
		busy[l.Domid] = true
	}
	for _, r := range st.Released {
		if now-r.At < a.ReuseTimeout.Seconds() {
			busy[r.Domid] = true
		}
	}
	for d := range a.recentHistory(now) {
		busy[d] = true
	}
	start := st.Next
	if start < FirstGuest || start > LastGuest {
		start = FirstGuest
	}
	for i := 0; i <= LastGuest-FirstGuest; i++ {
		d := FirstGuest + (start-FirstGuest+i)%(LastGuest-FirstGuest+1)
		if !busy[d] {
			return d, nil
		}
	}
	return 0, ErrExhausted
}

// recentHistory reads libxl's domid-history: "<monotonic seconds> <domid>"
// lines for domains destroyed lately, which libxl will not reuse either.
func (a *Allocator) recentHistory(now float64) map[int]bool {
	out := map[int]bool{}
	if a.History == "" {
		return out
	}
	f, err := os.Open(a.History)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			continue
		}
		at, err1 := strconv.ParseFloat(fields[0], 64)
		d, err2 := strconv.Atoi(fields[1])
		if err1 == nil && err2 == nil && now-at < a.ReuseTimeout.Seconds() {
			out[d] = true
		}
	}
	return out
}

// release starts a domid's reuse timeout. Only the latest release of a
// domid matters, so there is one entry per domid: the file stays as small
// as the number of domids in use, however often they are launched.
func (st *State) release(domid int, now float64) {
	for i := range st.Released {
		if st.Released[i].Domid == domid {
			st.Released[i].At = now
			return
		}
	}
	st.Released = append(st.Released, Released{Domid: domid, At: now})
}

// tidy reaps dead holders' leases when fullReap asks for it or a reap is
// due, and forgets expired releases.
func (a *Allocator) tidy(st *State, now float64, fullReap bool) {
	if fullReap || st.reapDue(now) {
		st.dropDead(now, func(Lease) bool { return true })
		sort.Slice(st.Leases, func(i, j int) bool { return st.Leases[i].Domid < st.Leases[j].Domid })
		st.Reaped = now
	}
	a.forget(st, now)
}

// dropDead turns the leases picked by which whose holders are gone into
// released domids. It reads /proc for each picked lease, so a full reap
// (every lease) runs only when due (reapInterval).
func (st *State) dropDead(now float64, which func(Lease) bool) {
	kept := st.Leases[:0]
	for _, l := range st.Leases {
		if !which(l) || l.Live() {
			kept = append(kept, l)
		} else {
			st.release(l.Domid, now)
		}
	}
	st.Leases = kept
}

// forget drops releases older than the reuse timeout, which no longer
// keep their domid. It costs no system call, so every update does it:
// the file stays as small as the domids freed within the timeout.
func (a *Allocator) forget(st *State, now float64) {
	fresh := st.Released[:0]
	for _, r := range st.Released {
		if now-r.At < a.ReuseTimeout.Seconds() {
			fresh = append(fresh, r)
		}
	}
	st.Released = fresh
}

// reapDue says whether the holders were last checked longer ago than
// reapInterval (or before a reboot, when the clock started again).
func (st *State) reapDue(now float64) bool {
	return now-st.Reaped >= reapInterval.Seconds() || now < st.Reaped
}

// update runs fn on the state under the lock and saves the result, after
// tidying it (see tidy).
func (a *Allocator) update(fullReap bool, fn func(st *State, now float64) error) error {
	if err := statedir.Ensure(a.Dir); err != nil {
		return err
	}
	lockPath := filepath.Join(a.Dir, lockFile)
	lock, err := unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open lease lock %s: %w", lockPath, err)
	}
	defer unix.Close(lock) // closing drops the flock, as does dying
	for {
		err = unix.Flock(lock, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", lockPath, err)
	}
	st, err := a.read()
	if err != nil {
		return err
	}
	now := monotonic()
	a.tidy(&st, now, fullReap)
	if err := fn(&st, now); err != nil {
		return err
	}
	return a.write(st)
}

func (a *Allocator) read() (State, error) {
	st := State{Version: 1, Next: FirstGuest}
	b, err := atomicfile.ReadSmall(filepath.Join(a.Dir, LeaseFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st, err = unmarshalState(b)
	if err != nil {
		return st, fmt.Errorf("lease file %s is damaged (%v); move it aside to start afresh", filepath.Join(a.Dir, LeaseFile), err)
	}
	return st, nil
}

func (a *Allocator) write(st State) error {
	return atomicfile.Write(filepath.Join(a.Dir, LeaseFile), st.marshal(), 0o600)
}

func monotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return float64(time.Now().UnixNano()) / 1e9
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}
