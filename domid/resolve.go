// Package domid decides which Xen domain a device model serves: from what
// the toolstack passed, or from an atomic lease for launches that carry
// none.
package domid

import (
	"errors"
	"fmt"
	"strconv"
)

// Domain id ranges, from Xen's public headers.
const (
	Dom0 = 0
	// FirstGuest and LastGuest bound the ids a guest can have.
	FirstGuest = 1
	LastGuest  = 0x7FEF
	// FirstReserved is DOMID_FIRST_RESERVED: DOMID_SELF, DOMID_IO and the
	// like are no domains a device model can serve.
	FirstReserved = 0x7FF0
)

// Source says where a domid came from.
type Source string

const (
	FromArgv    Source = "-xen-domid"
	FromEnv     Source = "XEN_DOMAIN_ID"
	FromLeading Source = "leading argument"
	FromSetting Source = "DMLAUNCH_DOMID"
	FromLease   Source = "lease"
)

// Candidate is one value a source offered.
type Candidate struct {
	Source Source
	Value  string
}

// Inputs are the places a domid may be given, in order of precedence.
// Empty strings are absent sources.
type Inputs struct {
	Argv    []string // every -xen-domid value
	Env     string
	Leading string
	Setting string
}

// ErrNoDomid is returned by Resolve when no source gives a domid: the
// launch needs a lease.
var ErrNoDomid = errors.New("no domid given")

// InvalidError is a domid value that is not a usable domain id.
type InvalidError struct {
	Candidate
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("domid %q from %s %s", e.Value, e.Source, e.Reason)
}

// ConflictError is two sources naming different domains.
type ConflictError struct{ First, Second Candidate }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s says domain %s but %s says domain %s",
		e.First.Source, e.First.Value, e.Second.Source, e.Second.Value)
}

// Resolution is a decided domid and where it came from.
type Resolution struct {
	Domid  int
	Source Source
	// Agreeing lists every source that gave it.
	Agreeing []Source
}

// Parse reads a domid as the toolstack writes it: a decimal number in
// 0..0x7FEF.
func Parse(c Candidate) (int, error) {
	if c.Value == "" {
		return 0, &InvalidError{c, "is empty"}
	}
	for _, r := range c.Value {
		if r < '0' || r > '9' {
			if r == '-' && c.Value[0] == '-' {
				return 0, &InvalidError{c, "is negative"}
			}
			return 0, &InvalidError{c, "is not a decimal number"}
		}
	}
	n, err := strconv.ParseUint(c.Value, 10, 32)
	if err != nil || n >= FirstReserved {
		return 0, &InvalidError{c, fmt.Sprintf("is out of range: domain ids are 0 to %d (0x%X); 0x%X and up are reserved", LastGuest, LastGuest, FirstReserved)}
	}
	return int(n), nil
}

// Resolve checks every given source and returns the domid they agree on,
// ErrNoDomid when none gives one, or an *InvalidError or *ConflictError.
func Resolve(in Inputs) (Resolution, error) {
	var cands []Candidate
	for _, v := range in.Argv {
		cands = append(cands, Candidate{FromArgv, v})
	}
	for _, c := range []Candidate{{FromEnv, in.Env}, {FromLeading, in.Leading}, {FromSetting, in.Setting}} {
		if c.Value != "" {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return Resolution{}, ErrNoDomid
	}
	var res Resolution
	for i, c := range cands {
		n, err := Parse(c)
		if err != nil {
			return Resolution{}, err
		}
		if i == 0 {
			res = Resolution{Domid: n, Source: c.Source}
		} else if n != res.Domid {
			return Resolution{}, &ConflictError{First: cands[0], Second: c}
		}
		if len(res.Agreeing) == 0 || res.Agreeing[len(res.Agreeing)-1] != c.Source {
			res.Agreeing = append(res.Agreeing, c.Source)
		}
	}
	return res, nil
}
