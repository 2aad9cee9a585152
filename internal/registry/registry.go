// Package registry writes one record per running launch into the state
// directory, so operators can list what dmlaunch started and reach it.
// Package inventory reads them; this one stays free of encoding/json,
// which would cost every launch its start-up time.
package registry

import (
	"bytes"
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

// Write stores the record atomically, readable by its owner only.
func Write(dir string, r Record) (string, error) {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	return path, atomicfile.Write(path, r.appendJSON(make([]byte, 0, 1024)), 0o600)
}

// Remove deletes the record of a launch, but only while it is still the
// one this launcher wrote: a later launch for the same domain may have
// replaced it.
func Remove(dir string, r Record) error {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	cur, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, r.appendJSON(nil)) {
		return nil
	}
	return os.Remove(path)
}
