// Package registry writes one record per running launch into the state
// directory, so operators can list what dmlaunch started and reach it.
// Package inventory reads them; this one stays free of encoding/json,
// which would cost every launch its start-up time.
package registry

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"github.com/dmlaunch/dmlaunch/internal/proc"
)

// Record describes one launch. The log line says the same things.
type Record struct {
	Domid int    `json:"domid"`
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Mode  string `json:"mode"`
	// Launcher is the process the toolstack started. In pass-through mode
	// it became QEMU, so QEMUPID is the same pid.
	Launcher   proc.Identity `json:"launcher"`
	QEMUPID    int           `json:"qemu_pid"`
	QEMU       string        `json:"qemu"`
	Argv       []string      `json:"argv"`
	GDB        string        `json:"gdb,omitempty"`
	ConsolePTY string        `json:"console_pty,omitempty"`
	ConsoleLog string        `json:"console_log,omitempty"`
	QMP        string        `json:"qmp,omitempty"`
	Started    time.Time     `json:"started"`
	// PIDFile is set for a pass-through launch whose QEMU daemonizes
	// (-daemonize with -pidfile): the process dmlaunch exec'd exits once
	// the daemon runs, and readers find the daemon through this file
	// (Follow).
	PIDFile string `json:"pidfile,omitempty"`
}

// FileName is "<domid>.json" for a domain's device model; backends of the
// same domain get their kind in the name so they do not overwrite it.
func FileName(domid int, kind string) string {
	if kind == "qdisk" {
		return strconv.Itoa(domid) + "-qdisk.json"
	}
	return strconv.Itoa(domid) + ".json"
}

// Write stores the record atomically, readable by its owner only. It
// replaces the record of an earlier launch of the same domid and kind,
// and removes the other kind's record for the domid if that launch is
// gone (a gone record costs the next launch of its domid one open).
func Write(dir string, r Record) (string, error) {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	if err := atomicfile.Write(path, r.appendJSON(make([]byte, 0, 1024)), 0o600); err != nil {
		return path, err
	}
	other := "qdisk"
	if r.Kind == "qdisk" {
		other = ""
	}
	// Almost always there is no such record: its directory's owner is
	// read only if there is.
	_, _ = removeIf(filepath.Join(dir, FileName(r.Domid, other)), ownerUnread, State.Gone)
	return path, nil
}

// SweepEnded removes the records of pass-through launches that have
// ended (Follow says Ended): after xl destroy, nothing else would. It
// leaves the record named keep (the caller is about to replace it), stale
// records (dmctl doctor reports those: something went wrong) and records
// it cannot read. It costs one getdents(2) and, per other record, a read
// of it and of its launcher's /proc stat. A launch calls it under the
// lease lock, so no other guest launch replaces a record meanwhile. It
// returns how many records it removed.
func SweepEnded(dir, keep string) int {
	var names []string
	eachRecord(dir, func(name string, _ int) {
		if name != keep {
			names = append(names, name)
		}
	})
	owner, _ := Owner(dir) // once, not per record; -1 if it cannot be told
	removed := 0
	for _, name := range names {
		if ok, _ := removeIf(filepath.Join(dir, name), owner, func(s State) bool { return s == Ended }); ok {
			removed++
		}
	}
	return removed
}

// ownerUnread asks removeIf to read the owner of the record's directory
// itself, once it has a record to judge.
const ownerUnread = -2

// removeIf removes the record at path if what became of its launch
// (Follow, trusting the pidfiles of owner, the state directory's owner)
// satisfies gone, and says whether it did. A record that cannot be read,
// that changed since it was read, or whose launch's state is Unknown
// (gone never takes that), is left alone.
func removeIf(path string, owner int, gone func(State) bool) (bool, error) {
	b, err := ReadFile(path, -1)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return false, err
	}
	s, err := ParseSummary(b)
	if err != nil {
		return false, nil
	}
	if owner == ownerUnread {
		owner, _ = Owner(filepath.Dir(path)) // -1 (root only) if it cannot be told
	}
	if st, _, _ := s.Follow(owner); !gone(st) {
		return false, nil
	}
	return RemoveIfUnchanged(path, b, -1)
}

// Remove deletes the record of a launch, but only while it is still the
// one this launcher wrote: a later launch for the same domain may have
// replaced it.
func Remove(dir string, r Record) error {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	_, err := RemoveIfUnchanged(path, r.appendJSON(nil), -1)
	return err
}
