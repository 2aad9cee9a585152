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
