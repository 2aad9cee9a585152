package domid

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
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
	// Boot is the kernel's boot id when the file was written: monotonic
	// times and process identities from another boot mean nothing.
	Boot string `json:"boot,omitempty"`
	// Damage says what was wrong with the file, for a state rebuilt from
	// the registry by a reader that may not repair it (List, Peek).
	Damage string `json:"damage,omitempty"`
}

// Allocator hands out domids for launches that carry none. Every change
// happens under an exclusive flock and lands by writing a new file and
// renaming it over the old one (atomicfile.Write), so a process killed at
// any moment leaves either the old state or the new one.
type Allocator struct {
	Dir          string
	History      string        // libxl's domid-history; "" to ignore
	ReuseTimeout time.Duration // how long a freed domid stays unused
	// Warn is told, in one line, of each repair: a damaged or missing
	// lease file rebuilt, leftovers removed. nil says nothing.
	Warn func(msg string)
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

// LiveHolderError refuses to release by hand a domid whose holder still
// runs: another launch could then be given the domid of a running domain.
type LiveHolderError struct{ Lease Lease }

func (e *LiveHolderError) Error() string {
	return fmt.Sprintf("domain %d is held by process %d, a %s device model running since %s; stop it and its lease ends by itself (--force releases it anyway)",
		e.Lease.Domid, e.Lease.Holder.PID, e.Lease.Kind, e.Lease.Since.Format(time.RFC3339))
}

// Request asks for a lease. Domid < 0 asks the allocator to choose.
type Request struct {
	Domid  int
	Kind   string
	Name   string
	Holder proc.Identity
	// Commit, if set, runs under the lease lock once the domid is
	// decided and before the lease is saved; an error gives the lease up.
	// A launch writes its registry record here, so that no moment exists
	// when its lease is saved but its record, from which a lost lease
	// file is rebuilt, is not.
	Commit func(Lease) error
}

// Acquire records a lease: on the given domid, refusing one already held
// for the same kind, or on a free domid it chooses.
func (a *Allocator) Acquire(req Request) (Lease, error) {
	var out Lease
	var recorded error // refused, with the lease file repaired all the same
	var inRegistry map[int]bool
	if req.Domid < 0 {
		// Read before the lock, so that the allocations that contend
		// for it do not wait for this too.
		inRegistry = registry.Domids(a.Dir)
	}
	err := a.update(false, func(st *State, now float64) error {
		l := Lease{Domid: req.Domid, Kind: req.Kind, Name: req.Name, Holder: req.Holder, Since: time.Now().UTC()}
		if req.Domid >= 0 {
			conflicts := func(held Lease) bool { return held.Domid == req.Domid && held.Kind == req.Kind }
			known := slices.ContainsFunc(st.Leases, conflicts)
			st.dropDead(now, conflicts)
			if i := slices.IndexFunc(st.Leases, conflicts); i >= 0 {
				return &HeldError{st.Leases[i]}
			}
			// A lease file that never saw this domain's launch (an old
			// copy put back) still has the registry: a live launch
			// recorded for this domid and kind holds it. For a new
			// domain this costs one failed open; a file that held the
			// last launch's lease knows the domain, and is trusted.
			if !known {
				if held, ok := a.recordedHolder(req.Domid, req.Kind); ok && held.Holder != req.Holder {
					st.Leases = append(st.Leases, held)
					recorded = &HeldError{held}
					return nil
				}
			}
		} else {
			// A lease whose holder died since the last full reap keeps
			// its domid busy until the next one: that domid would be
			// cooling down anyway.
			d, err := a.choose(st, now, inRegistry)
			if err != nil {
				return err
			}
			l.Domid, l.Allocated = d, true
			st.Next = d + 1
		}
		if req.Commit != nil {
			if err := req.Commit(l); err != nil {
				return err
			}
		}
		st.Leases = append(st.Leases, l)
		out = l
		return nil
	})
	if err == nil && recorded != nil {
		return Lease{}, recorded
	}
	return out, err
}

// Peek tells which domid Acquire would choose now, changing nothing.
func (a *Allocator) Peek() (int, error) {
	now := monotonic()
	st := a.view(now)
	a.tidy(&st, now, false) // as Acquire would
	return a.choose(&st, now, registry.Domids(a.Dir))
}

// Release frees every lease on domid held by holder (a launch giving up
// its own lease).
func (a *Allocator) Release(domid int, holder proc.Identity) error {
	return a.release(domid, func(l Lease) (bool, error) { return l.Holder == holder, nil })
}

// Free releases a domid by hand (dmctl domid release): a lease taken by
// hand, or one whose holder is gone. A live holder's lease is refused
// with a *LiveHolderError unless force is set.
func (a *Allocator) Free(domid int, force bool) error {
	return a.release(domid, func(l Lease) (bool, error) {
		if !force && l.Holder.PID != 0 && l.Holder.Alive() {
			return false, &LiveHolderError{l}
		}
		return true, nil
	})
}

func (a *Allocator) release(domid int, which func(Lease) (bool, error)) error {
	return a.update(false, func(st *State, now float64) error {
		kept := make([]Lease, 0, len(st.Leases))
		found := false
		for _, l := range st.Leases {
			if l.Domid == domid {
				drop, err := which(l)
				if err != nil {
					return err
				}
				if drop {
					found = true
					continue
				}
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

// List returns the leases with dead holders' leases left out, and
// recently freed domids. It writes nothing, not even the lock file: a
// damaged or missing lease file is rebuilt in memory (State.Damage says
// why) and repaired by the next launch.
func (a *Allocator) List() (State, error) {
	if err := statedir.Check(a.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return State{}, err // what a launch would refuse is not shown as truth
	}
	now := monotonic()
	st := a.view(now)
	a.tidy(&st, now, true)
	return st, nil
}

// Reap checks every holder now, releases the leases of those that died,
// and removes leftovers of writers that were killed (dmctl prune).
func (a *Allocator) Reap() (State, error) {
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

// choose picks a free domid. inRegistry holds the domids that had
// registry records a moment ago: only their records are read. (A record
// written since then belongs to a launch whose lease is in st, or to a
// backend, which libxl starts for a domid it gave.)
func (a *Allocator) choose(st *State, now float64, inRegistry map[int]bool) (int, error) {
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
		if busy[d] {
			continue
		}
		// The registry has the last word: a live launch recorded for d
		// holds it even when the lease file has lost its lease (a file
		// restored from a copy, a lease released by force). Its lease
		// is put back.
		if !inRegistry[d] {
			return d, nil
		}
		if held, ok := a.recordedHolder(d, ""); ok {
			st.Leases = append(st.Leases, held)
			continue
		}
		return d, nil
	}
	return 0, ErrExhausted
}

// recordedHolder looks for a live launch of domid d in the registry: of
// the given kind, or of any kind (backends too) for kind "". It costs a
// failed open(2) or two for a domid nobody recorded.
func (a *Allocator) recordedHolder(d int, kind string) (Lease, bool) {
	files := []string{registry.FileName(d, ""), registry.FileName(d, "qdisk")}
	if kind != "" {
		files = []string{registry.FileName(d, kind)}
	}
	for _, name := range files {
		s, err := registry.ReadSummary(filepath.Join(a.Dir, name), -1)
		if err != nil || kind != "" && s.Kind != kind || !s.Launcher.Alive() {
			continue
		}
		return leaseOf(s), true
	}
	return Lease{}, false
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
	sc := bufio.NewScanner(io.LimitReader(f, maxHistory))
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
			st.Released[i].At = max(st.Released[i].At, now)
			return
		}
	}
	st.Released = append(st.Released, Released{Domid: domid, At: now})
}

// tidy reaps dead holders' leases when fullReap asks for it or a reap is
// due, and forgets expired releases. It reports whether it reaped.
func (a *Allocator) tidy(st *State, now float64, fullReap bool) bool {
	reaped := fullReap || st.reapDue(now)
	if reaped {
		st.dropDead(now, func(Lease) bool { return true })
		sort.Slice(st.Leases, func(i, j int) bool { return st.Leases[i].Domid < st.Leases[j].Domid })
		st.Reaped = now
	}
	a.forget(st, now)
	return reaped
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
// tidying it (see tidy). A lease file that cannot be trusted is set aside
// and rebuilt first (see heal).
func (a *Allocator) update(fullReap bool, fn func(st *State, now float64) error) error {
	if err := statedir.Ensure(a.Dir); err != nil {
		return err
	}
	lockPath := filepath.Join(a.Dir, lockFile)
	lock, err := unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err == unix.ELOOP || err == unix.EISDIR {
		// A symbolic link or a directory is nobody's lock: nothing can
		// hold it, so it can be set aside without breaking a holder's
		// exclusion. (A regular lock file is never replaced.)
		aside := lockPath + ".damaged." + time.Now().UTC().Format("20060102T150405.000000000Z")
		if os.Rename(lockPath, aside) == nil {
			a.warn(fmt.Sprintf("lease lock %s was not a regular file; kept as %s", lockPath, aside))
		}
		lock, err = unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return &StateError{lockPath, "cannot be opened", err}
	}
	defer unix.Close(lock) // closing drops the flock, as does dying
	for {
		err = unix.Flock(lock, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return &StateError{lockPath, "cannot be locked", err}
	}
	now := monotonic()
	st := a.heal(now)
	if a.tidy(&st, now, fullReap) {
		// Once per full reap, not per launch: finding leftovers costs a
		// read of the whole directory, and finding the records of ended
		// pass-through launches (QEMU exited, nothing of dmlaunch left to
		// remove them) a read of every record and of its launcher's
		// /proc stat, about 20 us each in a launch.
		a.removeLeftovers()
		registry.SweepEnded(a.Dir, "")
	}
	if err := fn(&st, now); err != nil {
		return err
	}
	return a.write(st)
}

// StateError is a lease file or lock that cannot be used at all (a full
// or read-only state directory). A launch that carries its own domid goes
// on without its lease.
type StateError struct {
	Path string
	What string
	Err  error
}

func (e *StateError) Error() string { return fmt.Sprintf("%s %s: %v", e.Path, e.What, e.Err) }
func (e *StateError) Unwrap() error { return e.Err }

func (a *Allocator) path() string { return filepath.Join(a.Dir, LeaseFile) }

// load reads the lease file. damage says why the file cannot be trusted
// ("" when it can, or when it is missing: missing is true then); the
// state returned is then what could be salvaged from it.
func (a *Allocator) load() (st State, damage string, missing bool) {
	b, err := atomicfile.ReadNoFollow(a.path(), maxLeaseFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return State{Version: formatVersion, Next: FirstGuest}, "", true
	case errors.Is(err, unix.ELOOP):
		return State{Version: formatVersion, Next: FirstGuest}, "it is a symbolic link", false
	case err != nil:
		return State{Version: formatVersion, Next: FirstGuest}, err.Error(), false
	}
	st, err = unmarshalState(b)
	if err != nil {
		return salvage(b), err.Error(), false
	}
	if st.Version < formatVersion {
		// Version 1 had no end line: a file cut short read as whole.
		return st, "", false
	}
	return st, "", false
}

// view is the state as a reader that writes nothing sees it: the file,
// or what heal would rebuild.
func (a *Allocator) view(now float64) State {
	st, damage, missing := a.load()
	if damage == "" && !missing && st.Version == formatVersion {
		st.sameBoot(bootID())
		return st
	}
	st, _ = a.rebuild(st, now)
	switch {
	case damage != "":
		st.Damage = fmt.Sprintf("lease file %s is damaged (%s); shown rebuilt from the registry, the next launch repairs it", a.path(), damage)
	case missing:
		st.Damage = ""
	default:
		st.Damage = fmt.Sprintf("lease file %s is from an older dmlaunch; shown with the registry's launches, the next launch upgrades it", a.path())
	}
	return st
}

// heal returns the state, repairing the lease file's trouble under the
// lock: a file that cannot be trusted is kept aside as
// domids.damaged.<time> and the state rebuilt from what is true (see
// rebuild); one from an older version is merged with the registry too, as
// it may be cut short; a missing one is rebuilt from the registry (the
// first launch, or a file moved or removed by hand).
func (a *Allocator) heal(now float64) State {
	st, damage, missing := a.load()
	if damage == "" && !missing && st.Version == formatVersion {
		st.sameBoot(bootID())
		return st
	}
	st, found := a.rebuild(st, now)
	switch {
	case damage != "":
		aside := a.path() + ".damaged." + time.Now().UTC().Format("20060102T150405.000000000Z")
		kept := "kept as " + aside
		if err := os.Rename(a.path(), aside); err != nil {
			kept = "could not be kept aside (" + err.Error() + ")"
			_ = os.RemoveAll(a.path()) // it is replaced below either way
		}
		a.warn(fmt.Sprintf("lease file %s is damaged (%s); %s; rebuilt from %s", a.path(), damage, kept, found))
	case missing && found.records > 0:
		a.warn(fmt.Sprintf("lease file %s is missing; rebuilt from %s", a.path(), found))
	case !missing:
		a.warn(fmt.Sprintf("lease file %s is from an older dmlaunch; upgraded, with %s", a.path(), found))
	}
	return st
}

func (a *Allocator) warn(msg string) {
	if a.Warn != nil {
		a.Warn(msg)
	}
}

// sources counts what a rebuild found, for its log line.
type sources struct{ records, live, salvaged, bad int }

func (s sources) String() string {
	out := fmt.Sprintf("%d registry records (%d of them live launches, leased again; the rest cooling down)", s.records, s.live)
	if s.salvaged > 0 {
		out += fmt.Sprintf(", %d leases of live holders read from the old file", s.salvaged)
	}
	if s.bad > 0 {
		out += fmt.Sprintf(", %d records unreadable (see dmctl list)", s.bad)
	}
	return out + " and libxl's domid history"
}

// rebuild makes a state from what is true now. Every registry record of a
// device model names its launcher by pid and start time: a live one
// holds its domid again, a dead one's domid cools down as if just freed
// (its domain may have just gone). Leases salvaged from the old file are
// kept while their holders live (or were taken by hand); libxl's domid
// history is read by every allocation anyway.
func (a *Allocator) rebuild(old State, now float64) (State, sources) {
	st := State{Version: formatVersion, Next: old.Next, Boot: bootID(), Reaped: now}
	var found sources
	held := map[Lease]bool{}
	add := func(l Lease) {
		key := Lease{Domid: l.Domid, Kind: l.Kind, Holder: l.Holder}
		if !held[key] {
			held[key] = true
			st.Leases = append(st.Leases, l)
		}
	}
	sameBoot := old.Boot == "" || old.Boot == st.Boot
	for _, l := range old.Leases {
		if l.Domid < 0 || l.Domid > LastGuest {
			continue
		}
		if l.Holder.PID == 0 || sameBoot && l.Holder.Alive() {
			add(l)
			found.salvaged++
		}
	}
	if sameBoot {
		for _, r := range old.Released {
			if r.At <= now {
				st.release(r.Domid, r.At)
			}
		}
	}
	records, bad := registry.Summaries(a.Dir)
	found.bad = len(bad)
	for _, s := range records {
		if s.Qdisk {
			continue // backends take no lease (recordedHolder sees them)
		}
		found.records++
		if s.Launcher.Alive() {
			found.live++
			add(leaseOf(s))
		} else {
			st.release(s.Domid, now)
		}
	}
	sort.Slice(st.Leases, func(i, j int) bool { return st.Leases[i].Domid < st.Leases[j].Domid })
	return st, found
}

// leaseOf is the lease a live registry record stands for. Whether its
// domid was allocated is not recorded; it shows as given.
func leaseOf(s registry.Summary) Lease {
	return Lease{Domid: s.Domid, Kind: s.Kind, Name: s.Name, Holder: s.Launcher, Since: time.Now().UTC()}
}

// sameBoot drops what a state from an earlier boot cannot mean now: its
// monotonic times and its holders' identities. Leases taken by hand stay
// until released.
func (st *State) sameBoot(boot string) {
	if st.Boot == boot || boot == "" {
		return
	}
	if st.Boot != "" {
		kept := st.Leases[:0]
		for _, l := range st.Leases {
			if l.Holder.PID == 0 {
				kept = append(kept, l)
			}
		}
		st.Leases, st.Released, st.Reaped = kept, nil, 0
	}
	st.Boot = boot
}

// removeLeftovers removes the temporary files of writers killed between
// creating and renaming them (atomicfile names them after their pid).
func (a *Allocator) removeLeftovers() {
	removed, _ := atomicfile.RemoveLeftovers(a.Dir)
	if len(removed) > 0 {
		a.warn(fmt.Sprintf("removed %d temporary files left by killed writers in %s", len(removed), a.Dir))
	}
}

func (a *Allocator) write(st State) error {
	st.Damage = ""
	if err := atomicfile.Write(a.path(), st.marshal(), 0o600); err != nil {
		return &StateError{a.path(), "cannot be written", err}
	}
	return nil
}

// Limits on what is read, so a file that grows without end cannot stall
// a launch: the lease file holds at most one line of about 100 bytes per
// guest domid, libxl's history one short line per recent domain.
const (
	maxLeaseFile = 8 << 20
	maxHistory   = 4 << 20
)

var bootOnce struct {
	sync.Once
	id string
}

// bootID is the kernel's id of this boot ("" if it cannot be read), read
// once per process.
func bootID() string {
	bootOnce.Do(func() {
		b, err := atomicfile.ReadNoFollow("/proc/sys/kernel/random/boot_id", 64)
		if err == nil {
			bootOnce.id = strings.TrimSpace(string(b))
		}
	})
	return bootOnce.id
}

func monotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return float64(time.Now().UnixNano()) / 1e9
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}
