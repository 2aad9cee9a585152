package argv

// Rule is a named rewrite of a command line. Rules are pure: they return a
// new command line and never change the one they are given.
type Rule struct {
	Name string
	// Why says what the rule is for, for dry runs and logs.
	Why   string
	Apply func(CommandLine) (CommandLine, error)
}

// StripLeadingDomid removes a leading bare domid: QEMU would take it for a
// disk image.
var StripLeadingDomid = Rule{
	Name: "strip-leading-domid",
	Why:  "QEMU reads a bare leading number as a disk image",
	Apply: func(cl CommandLine) (CommandLine, error) {
		c := cl.Clone()
		c.LeadingDomid = ""
		return c, nil
	},
}

// Applied records one rule that changed the command line.
type Applied struct {
	Rule   string
	Why    string
	Before []string
	After  []string
}

// ApplyRules runs the rules in order and reports which ones changed
// anything.
func ApplyRules(cl CommandLine, rules ...Rule) (CommandLine, []Applied, error) {
	var applied []Applied
	for _, r := range rules {
		before := cl.Render()
		next, err := r.Apply(cl)
		if err != nil {
			return cl, applied, &RuleError{Rule: r.Name, Err: err}
		}
		after := next.Render()
		if !equalWords(before, after) {
			applied = append(applied, Applied{Rule: r.Name, Why: r.Why, Before: before, After: after})
		}
		cl = next
	}
	return cl, applied, nil
}

// RuleError is a rule's failure, naming the rule.
type RuleError struct {
	Rule string
	Err  error
}

func (e *RuleError) Error() string { return "rewrite " + e.Rule + ": " + e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

func equalWords(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SerialToDevice connects the guest's first serial port to a host device
// (the launcher's pty): the first -serial is replaced, or one is added.
func SerialToDevice(path string) Rule {
	return Rule{
		Name: "serial-to-pty",
		Why:  "the first serial port goes to the launcher's pty, which keeps every byte in the console log",
		Apply: func(cl CommandLine) (CommandLine, error) {
			c := cl.Clone()
			for i, w := range c.Words {
				if w.IsOption() && w.Canonical() == "serial" && w.HasValue {
					c.Words[i].Value = path
					return c, nil
				}
			}
			c.Words = append(c.Words, Word{Flag: "-serial", Value: path, HasValue: true})
			return c, nil
		},
	}
}

// QMPSocketID is the chardev id of the launcher's own monitor socket.
const QMPSocketID = "dmlaunch-qmp"

// AddQMPSocket gives QEMU a QMP monitor on a unix socket of the
// launcher's, beside whatever monitors the toolstack set up.
func AddQMPSocket(path string) Rule {
	return Rule{
		Name: "add-qmp-socket",
		Why:  "a QMP socket of dmlaunch's own, for dmctl monitor",
		Apply: func(cl CommandLine) (CommandLine, error) {
			c := cl.Clone()
			c.Words = append(c.Words,
				Word{Flag: "-chardev", Value: "socket,id=" + QMPSocketID + ",path=" + escapeCommas(path) + ",server=on,wait=off", HasValue: true},
				Word{Flag: "-mon", Value: "chardev=" + QMPSocketID + ",mode=control", HasValue: true})
			return c, nil
		},
	}
}

// WantsPTYSerial reports whether the toolstack asked for the first serial
// port on a QEMU pty (libxl's "serial=pty"), which it then looks up with
// query-chardev and publishes for xl console.
func (cl CommandLine) WantsPTYSerial() bool {
	v, ok := cl.Values("serial"), false
	if len(v) > 0 {
		ok = v[0] == "pty"
	}
	return ok
}
