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
// and removes the other kind's record for the domid if its launcher is
// gone (a stale record costs the next launch of its domid one open).
func Write(dir string, r Record) (string, error) {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	if err := atomicfile.Write(path, r.appendJSON(make([]byte, 0, 1024)), 0o600); err != nil {
		return path, err
	}
	other := "qdisk"
	if r.Kind == "qdisk" {
		other = ""
	}
	_, _ = RemoveStale(filepath.Join(dir, FileName(r.Domid, other)), -1)
	return path, nil
}

// RemoveStale removes the record at path if its launcher is gone, and
// says whether it did. A record that cannot be read is left alone.
func RemoveStale(path string, owner int) (bool, error) {
	b, err := ReadFile(path, owner)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return false, err
	}
	s, err := ParseSummary(b)
	if err != nil || s.Launcher.Alive() {
		return false, nil
	}
	return RemoveIfUnchanged(path, b, owner)
}

// Remove deletes the record of a launch, but only while it is still the
// one this launcher wrote: a later launch for the same domain may have
// replaced it.
func Remove(dir string, r Record) error {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	_, err := RemoveIfUnchanged(path, r.appendJSON(nil), -1)
	return err
}
