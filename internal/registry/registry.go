// Package registry keeps one record per running launch in the state
// directory, so operators can list what dmlaunch started and reach it.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	return path, atomicfile.Write(path, append(b, '\n'), 0o600)
}

// Remove deletes the record of a launch, but only while it is still this
// launcher's: a later launch for the same domain may have replaced it.
func Remove(dir string, r Record) error {
	path := filepath.Join(dir, FileName(r.Domid, r.Kind))
	cur, err := Read(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if cur.Launcher != r.Launcher {
		return nil
	}
	return os.Remove(path)
}

// Read loads one record.
func Read(path string) (Record, error) {
	var r Record
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("registry record %s: %w", path, err)
	}
	return r, nil
}

// Entry is a record as found, with whether its launcher still runs.
type Entry struct {
	Record
	Path  string `json:"path"`
	Stale bool   `json:"stale"`
}

// List reads every record, sorted by domid. A missing directory is an
// empty registry.
func List(dir string) ([]Entry, error) {
	names, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range names {
		n := de.Name()
		if !strings.HasSuffix(n, ".json") || n[0] < '0' || n[0] > '9' {
			continue
		}
		path := filepath.Join(dir, n)
		r, err := Read(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed while we listed
			}
			return out, err
		}
		out = append(out, Entry{Record: r, Path: path, Stale: !r.Launcher.Alive()})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Domid != out[j].Domid {
			return out[i].Domid < out[j].Domid
		}
		return out[i].Kind < out[j].Kind
	})
	return out, nil
}

// Find returns the records for one domid.
func Find(dir string, domid int) ([]Entry, error) {
	all, err := List(dir)
	var out []Entry
	for _, e := range all {
		if e.Domid == domid {
			out = append(out, e)
		}
	}
	return out, err
}
