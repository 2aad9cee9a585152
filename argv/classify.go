package argv

import (
	"slices"
	"strings"
)

// Kind is what a device-model invocation is for. The toolstack starts QEMU
// for several purposes and only some of them are a guest's device model.
type Kind string

const (
	// KindHVM is the device model of an HVM guest (-machine xenfv, pc or q35).
	KindHVM Kind = "hvm"
	// KindPV is the backend QEMU of a PV or PVH guest (-machine xenpv).
	KindPV Kind = "pv"
	// KindQdisk is a disk backend started by libxl or xencommons
	// (xenpv with monitor, serial and parallel on /dev/null).
	KindQdisk Kind = "qdisk"
	// KindStubdomDM is the dom0 QEMU serving a stub domain's consoles
	// (xenpv, named "<guest>-dm").
	KindStubdomDM Kind = "stubdom-dm"
	// KindProbe is libxl's capability probe (Xen 4.20+): -machine none,
	// no -xen-domid.
	KindProbe Kind = "probe"
	// KindQuery asks QEMU a question and exits: -version, -help, or a
	// "help" value such as -machine help or -device e1000,help. Nothing
	// runs for a domain.
	KindQuery Kind = "query"
	// KindUnknown is anything else, including launches by other
	// integrations that carry no domid.
	KindUnknown Kind = "unknown"
)

// Kinds lists every kind, for help texts and validation.
var Kinds = []Kind{KindHVM, KindPV, KindQdisk, KindStubdomDM, KindProbe, KindQuery, KindUnknown}

// Debuggable reports whether a kind may be run under a debugger. Probes,
// queries and backends serve the toolstack itself and always pass through.
func (k Kind) Debuggable() bool {
	return k != KindProbe && k != KindQdisk && k != KindQuery
}

// TakesLease reports whether a launch of this kind holds a domid lease.
func (k Kind) TakesLease() bool {
	return k != KindProbe && k != KindQdisk && k != KindQuery
}

// Machine returns the machine type and accelerator the command line asks
// for. Several -machine options merge in QEMU, later keys winning.
func (cl CommandLine) Machine() (machineType, accel string) {
	for _, v := range cl.Values("machine") {
		so := ParseSubopts(v, "type")
		if t, ok := so.Get("type"); ok {
			machineType = t
		}
		if a, ok := so.Get("accel"); ok {
			accel = a
		}
	}
	for _, v := range cl.Values("accel") {
		if a, ok := ParseSubopts(v, "accel").Get("accel"); ok {
			accel = a
		}
	}
	return machineType, accel
}

// GuestName returns the -name value's guest name, if any.
func (cl CommandLine) GuestName() string {
	v, ok := cl.Last("name")
	if !ok {
		return ""
	}
	n, _ := ParseSubopts(v, "guest").Get("guest")
	return n
}

// Classify tells which kind of invocation the command line is.
func (cl CommandLine) Classify() Kind {
	if cl.IsQuery() {
		return KindQuery
	}
	machine, accel := cl.Machine()
	hasDomid := cl.Has("xen-domid") || cl.LeadingDomid != ""
	if !hasDomid {
		if machine == "none" {
			return KindProbe
		}
		return KindUnknown
	}
	switch {
	case machine == "xenpv":
		if cl.onlyNull("monitor") && cl.onlyNull("serial") && cl.onlyNull("parallel") {
			return KindQdisk
		}
		if strings.HasSuffix(cl.GuestName(), "-dm") {
			return KindStubdomDM
		}
		return KindPV
	case machine == "xenfv", accel == "xen",
		strings.HasPrefix(machine, "pc"), strings.HasPrefix(machine, "q35"):
		return KindHVM
	}
	return KindUnknown
}

func (cl CommandLine) onlyNull(name string) bool {
	v := cl.Values(name)
	if len(v) == 0 {
		return false
	}
	for _, x := range v {
		if x != "/dev/null" && x != "null" && x != "none" {
			return false
		}
	}
	return true
}

// helpValued are the options whose value can be "help" (or "?"), which
// makes QEMU list the choices and exit. Sub-options count too:
// "-device e1000,help".
var helpValued = []string{
	"accel", "audiodev", "chardev", "cpu", "d", "device", "display", "machine",
	"netdev", "nic", "object", "trace", "vga",
}

// IsQuery reports whether QEMU will answer a question and exit without
// running anything: -version, -help, -h, or a "help" value.
func (cl CommandLine) IsQuery() bool {
	for _, w := range cl.Words {
		if !w.IsOption() {
			continue
		}
		name := w.Canonical()
		switch {
		case name == "version" || name == "help" || name == "h":
			return true
		case !w.HasValue || !strings.Contains(w.Value, "help") && !strings.Contains(w.Value, "?"):
		case !slices.Contains(helpValued, name):
		default:
			for _, part := range splitEscaped(w.Value) {
				if part == "help" || part == "?" {
					return true
				}
			}
		}
	}
	return false
}
