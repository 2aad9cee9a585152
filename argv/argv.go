// Package argv is the QEMU command line as data: parsed with QEMU's own
// rules for which options take a value, rewritten by small named rules, and
// rendered back word for word. It does no I/O.
package argv

import (
	"fmt"
	"strings"
)

// Word is one option of a QEMU command line, with its value if it takes
// one, or one positional word (QEMU reads a bare word as a disk image).
type Word struct {
	// Flag is the option as written ("-machine", "--M"); empty for a
	// positional word.
	Flag string
	// Value is the option's value, or the positional word itself.
	Value string
	// HasValue is set when the option consumed the next word as its value.
	HasValue bool
}

// IsOption reports whether w is an option rather than a positional word.
func (w Word) IsOption() bool { return w.Flag != "" }

// Name is the option's name as QEMU looks it up: without the leading dash,
// and without a second one ("--opt" equals "-opt" in QEMU).
func (w Word) Name() string {
	if !w.IsOption() {
		return ""
	}
	return strings.TrimPrefix(w.Flag[1:], "-")
}

// Canonical is Name with short aliases resolved ("M" is "machine").
func (w Word) Canonical() string {
	return canonicalName(w.Name())
}

// CommandLine is a parsed QEMU command line, without the program name.
type CommandLine struct {
	// LeadingDomid is the bare domid some integrations pass before the
	// QEMU options ("wrapper 3 -xen-domid 3 ..."); empty when absent.
	LeadingDomid string
	Words        []Word
}

// MissingValueError is returned by Parse when the last word is an option
// that takes a value.
type MissingValueError struct{ Option string }

func (e *MissingValueError) Error() string {
	return fmt.Sprintf("option %s needs a value but is the last word of the command line", e.Option)
}

// Parse reads args (without the program name) as QEMU would. It never loses
// a word: Render(Parse(args)) equals args for every input, even when Parse
// also reports an error.
func Parse(args []string) (CommandLine, error) {
	var cl CommandLine
	if len(args) > 0 && isLeadingDomid(args[0]) {
		cl.LeadingDomid = args[0]
		args = args[1:]
	}
	cl.Words = make([]Word, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) == 0 || a[0] != '-' {
			cl.Words = append(cl.Words, Word{Value: a})
			continue
		}
		w := Word{Flag: a}
		if _, hasValue := Known(w.Name()); hasValue {
			if i+1 >= len(args) {
				cl.Words = append(cl.Words, w)
				return cl, &MissingValueError{Option: a}
			}
			i++
			w.Value, w.HasValue = args[i], true
		}
		cl.Words = append(cl.Words, w)
	}
	return cl, nil
}

// isLeadingDomid accepts only a plain decimal number: anything else in
// first place is an option or a disk image and is QEMU's to judge.
func isLeadingDomid(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Render returns the command line as words, exactly as parsed, including a
// leading domid.
func (cl CommandLine) Render() []string {
	out := make([]string, 0, len(cl.Words)*2+1)
	if cl.LeadingDomid != "" {
		out = append(out, cl.LeadingDomid)
	}
	for _, w := range cl.Words {
		if w.IsOption() {
			out = append(out, w.Flag)
			if w.HasValue {
				out = append(out, w.Value)
			}
		} else {
			out = append(out, w.Value)
		}
	}
	return out
}

// Clone returns a copy that shares nothing with cl.
func (cl CommandLine) Clone() CommandLine {
	c := cl
	c.Words = append([]Word(nil), cl.Words...)
	return c
}

// Values returns the values of every occurrence of the option (canonical
// name), in order.
func (cl CommandLine) Values(name string) []string {
	var out []string
	for _, w := range cl.Words {
		if w.IsOption() && w.Canonical() == name {
			out = append(out, w.Value)
		}
	}
	return out
}

// Has reports whether the option (canonical name) occurs.
func (cl CommandLine) Has(name string) bool {
	for _, w := range cl.Words {
		if w.IsOption() && w.Canonical() == name {
			return true
		}
	}
	return false
}

// Last returns the value of the last occurrence of the option, which is
// the one QEMU honours for single-valued options.
func (cl CommandLine) Last(name string) (string, bool) {
	v := cl.Values(name)
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// Unknown returns the options QEMU 7.2 would not recognise.
func (cl CommandLine) Unknown() []string {
	var out []string
	for _, w := range cl.Words {
		if w.IsOption() {
			if known, _ := Known(w.Name()); !known {
				out = append(out, w.Flag)
			}
		}
	}
	return out
}
