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
	"strings"

	"github.com/dmlaunch/dmlaunch/internal/registry"
)

// Read loads one record.
func Read(path string) (registry.Record, error) {
	var r registry.Record
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
	registry.Record
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
