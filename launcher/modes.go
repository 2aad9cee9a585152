package launcher

import (
	"fmt"
	"strings"
)

// A DebugMode is one value of DMLAUNCH_DEBUG. Every supervised launch
// runs the same steps (see supervisedSteps); a mode only says which of the
// optional ones it needs. Adding a mode is adding an entry to debugModes.
type DebugMode struct {
	Name string
	// Help is the one-line description for the manual and dmctl doctor.
	Help string
	// HoldAtStart starts QEMU held before its first instruction
	// (gdbwrap.Hold); whatever serves the mode must release the hold to
	// the tool that attaches, and the launcher releases it on teardown.
	HoldAtStart bool
	// DebugPort opens the debug port and serves debuggers on it, one
	// gdbserver per accepted debugger.
	DebugPort bool
	// Excludes names the modes that cannot be asked for together with
	// this one; LoadConfig refuses such a list.
	Excludes []string
	// Tracer is a tool attached to QEMU while it is held (HoldAtStart),
	// which the hold is released to (tools.go).
	Tracer string
	// Wrapper is a tool QEMU runs under, in the same process (tools.go).
	Wrapper string
	// PortTool is what each debugger on the debug port gets, with the
	// connection as its stdin and stdout: gdbserver when empty.
	PortTool string
}

// Debug modes.
const (
	ModeGDB     = "gdb"
	ModeGDBWait = "gdb-wait"
	ModeConsole = "console"
	ModeStrace  = "strace"
	// ModeMemcheck is named after valgrind's tool.
	ModeMemcheck = "memcheck"
)

// debugModes is every debug mode. All of them run QEMU as the launcher's
// child with its first serial port on a pty whose every byte is logged.
var debugModes = []DebugMode{
	{Name: ModeGDB, Help: "QEMU runs at full speed; a debugger attaches through the debug port",
		DebugPort: true, Excludes: []string{ModeGDBWait, ModeStrace, ModeMemcheck}},
	{Name: ModeGDBWait, Help: "QEMU is held before its first instruction until a debugger attaches through the debug port",
		DebugPort: true, HoldAtStart: true, Excludes: []string{ModeGDB, ModeStrace, ModeMemcheck}},
	{Name: ModeConsole, Help: "only the console: the pty and the console log"},
	// One tracer per process: strace excludes every other debugger.
	{Name: ModeStrace, Help: "QEMU traced by strace -f -tt from its first instruction, into a file in the log directory",
		HoldAtStart: true, Tracer: ToolStrace, Excludes: []string{ModeGDB, ModeGDBWait, ModeMemcheck}},
	{Name: ModeMemcheck, Help: "QEMU under valgrind's memcheck, its log in the log directory; the debug port serves vgdb",
		Wrapper: ToolValgrind, DebugPort: true, PortTool: ToolVgdb, Excludes: []string{ModeGDB, ModeGDBWait, ModeStrace}},
}

// lookupMode finds a mode by name.
func lookupMode(name string) (DebugMode, bool) {
	for _, m := range debugModes {
		if m.Name == name {
			return m, true
		}
	}
	return DebugMode{}, false
}

// modeNames lists the modes for messages: "gdb, gdb-wait, console".
func modeNames() string {
	names := make([]string, len(debugModes))
	for i, m := range debugModes {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

// checkModes validates a DMLAUNCH_DEBUG list and returns it without
// duplicates and without "off"; the error says what is wrong with it.
func checkModes(list []string) ([]string, error) {
	var out []string
	off := false
	for _, name := range list {
		if name == "off" {
			off = true
			continue
		}
		if _, ok := lookupMode(name); !ok {
			return nil, fmt.Errorf("has unknown mode %q; use %s or off", name, modeNames())
		}
		if !contains(out, name) {
			out = append(out, name)
		}
	}
	for _, name := range out {
		m, _ := lookupMode(name)
		for _, x := range m.Excludes {
			if contains(out, x) {
				return nil, fmt.Errorf("asks for both %s and %s; choose one", name, x)
			}
		}
	}
	if off && len(out) > 0 {
		return nil, fmt.Errorf("mixes off with debug modes")
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// modes is the plan's debug modes, looked up.
func (p *Plan) modes() []DebugMode {
	var out []DebugMode
	for _, name := range p.Config.Debug {
		if m, ok := lookupMode(name); ok {
			out = append(out, m)
		}
	}
	return out
}

// wants reports whether any of the plan's modes has the property.
func (p *Plan) wants(property func(DebugMode) bool) bool {
	for _, m := range p.modes() {
		if property(m) {
			return true
		}
	}
	return false
}
