// Package inventory reads the registry records of running launches, for
// dmctl.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/dmlaunch/dmlaunch/internal/registry"
)

// Read loads one record, refusing what registry.ReadFile refuses (a
// symbolic link, a device or FIFO, an oversized file, another user's
// file); owner is the state directory's owner, or -1 for any.
func Read(path string, owner int) (registry.Record, []byte, error) {
	var r registry.Record
	b, err := registry.ReadFile(path, owner)
	if err != nil {
		return r, nil, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, b, &registry.BadRecordError{Path: path, Reason: fmt.Sprintf("is damaged (%v); dmctl prune --bad removes it", err)}
	}
	if d, _, _ := registry.ParseName(filepath.Base(path)); d != r.Domid {
		return r, b, &registry.BadRecordError{Path: path, Reason: fmt.Sprintf("names domain %d; dmctl prune --bad removes it", r.Domid)}
	}
	return r, b, nil
}

// Entry is a record as found, with what became of its launch.
type Entry struct {
	registry.Record
	Path string `json:"path"`
	// State is running, starting, ended, stale or unknown
	// (registry.State): the precise field.
	State registry.State `json:"state"`
	// Stale is set for every launch that is gone, ended or stale, as it
	// was before State told them apart: scripts that filter on it
	// (select(.stale|not)) keep taking only live launches. An unknown
	// launch is not known to be gone: not stale.
	Stale bool `json:"stale"`
	// Unknown says why State is unknown: what about a daemonized QEMU's
	// pidfile kept it from being followed. Such a record is kept.
	Unknown string `json:"unknown,omitempty"`
	// Starting is a live launch whose QEMU has not started yet: a
	// supervised launch records itself when it takes its lease, without
	// a QEMU pid, and completes the record once QEMU runs.
	Starting bool `json:"starting"`
	// DaemonPID is the pid of the QEMU that a pass-through launch's
	// -daemonize left running, read from its pidfile once the recorded
	// pid has exited; 0 otherwise.
	DaemonPID int `json:"daemon_pid,omitempty"`
	// raw is the file's content, to remove it only while unchanged.
	raw []byte
}

// Listing is every record of a state directory: those that could be
// read, and those that could not, each error naming its file.
type Listing struct {
	Entries []Entry
	Bad     []*registry.BadRecordError
	// Owner is the state directory's owner, whose records are trusted.
	Owner int
}

// List reads every record that can be read, sorted by domid; see Scan.
func List(dir string) ([]Entry, error) {
	l, err := Scan(dir)
	return l.Entries, err
}

// Scan reads every record, sorted by domid. One bad record does not stop
// the others: it is reported in Listing.Bad. A missing directory is an
// empty registry; an unreadable one is an error.
func Scan(dir string) (Listing, error) {
	out := Listing{Owner: -1}
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return out, err
	}
	if out.Owner, err = registry.Owner(dir); err != nil {
		return out, err
	}
	sort.Strings(names)
	for _, n := range names {
		if _, _, ok := registry.ParseName(n); !ok {
			continue
		}
		path := filepath.Join(dir, n)
		r, raw, err := Read(path, out.Owner)
		var bad *registry.BadRecordError
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // removed while we listed
		case errors.As(err, &bad):
			out.Bad = append(out.Bad, bad)
			continue
		case err != nil:
			out.Bad = append(out.Bad, &registry.BadRecordError{Path: path, Reason: "cannot be read: " + err.Error()})
			continue
		}
		st, daemon, why := r.Follow(out.Owner)
		en := Entry{Record: r, Path: path, State: st, Stale: st.Gone(),
			Starting: st == registry.Starting, DaemonPID: daemon, raw: raw}
		if why != nil {
			en.Unknown = why.Error()
		}
		out.Entries = append(out.Entries, en)
	}
	sort.SliceStable(out.Entries, func(i, j int) bool {
		a, b := out.Entries[i], out.Entries[j]
		if a.Domid != b.Domid {
			return a.Domid < b.Domid
		}
		return a.Kind < b.Kind
	})
	return out, nil
}

// Find returns the records for one domid; see Listing.Find.
func Find(dir string, domid int) ([]Entry, error) {
	l, err := Scan(dir)
	entries, _ := l.Find(domid)
	return entries, err
}

// Find returns the records for one domid, and the bad records whose name
// says they are that domid's.
func (l Listing) Find(domid int) ([]Entry, []*registry.BadRecordError) {
	var out []Entry
	for _, e := range l.Entries {
		if e.Domid == domid {
			out = append(out, e)
		}
	}
	var bad []*registry.BadRecordError
	for _, b := range l.Bad {
		if d, _, _ := registry.ParseName(filepath.Base(b.Path)); d == domid {
			bad = append(bad, b)
		}
	}
	return out, bad
}

// PID is the pid of the entry's QEMU as it runs now: the daemon a
// pass-through launch's -daemonize left running, or the recorded one.
func (e Entry) PID() int {
	if e.DaemonPID != 0 {
		return e.DaemonPID
	}
	return e.QEMUPID
}

// RemoveGone removes the record of an ended or stale launch, and its QMP
// socket, unless a new launch has replaced the record since it was read.
func (l Listing) RemoveGone(e Entry) (bool, error) {
	if !e.State.Gone() {
		return false, nil
	}
	removed, err := registry.RemoveIfUnchanged(e.Path, e.raw, l.Owner)
	if removed && e.QMP != "" && filepath.Dir(e.QMP) == filepath.Dir(e.Path) {
		// Only a socket in the state directory itself: the path comes
		// from a file, and dmctl removes nothing else on its word.
		if fi, err := os.Lstat(e.QMP); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(e.QMP)
		}
	}
	return removed, err
}
