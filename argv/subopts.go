package argv

import "strings"

// Pair is one element of a QEMU sub-option list ("key=value").
type Pair struct {
	Key   string
	Value string
	// Implied is set for a first element written without its key, as in
	// "-machine xenfv,..." where the key is "type".
	Implied bool
	// Bare is set for an element written without "=" ("server" for
	// "server=on").
	Bare bool
}

// Subopts is a parsed sub-option list, in order.
type Subopts []Pair

// ParseSubopts splits a QEMU sub-option list. A doubled comma is a literal
// comma. impliedKey names the key of a first element written without one
// (QEMU's "implied_opt_name"); empty when the option has none.
func ParseSubopts(s, impliedKey string) Subopts {
	elems := splitEscaped(s)
	out := make(Subopts, 0, len(elems))
	for i, e := range elems {
		key, value, hasEq := strings.Cut(e, "=")
		switch {
		case hasEq:
			out = append(out, Pair{Key: key, Value: value})
		case i == 0 && impliedKey != "":
			out = append(out, Pair{Key: impliedKey, Value: e, Implied: true})
		default:
			out = append(out, Pair{Key: e, Bare: true})
		}
	}
	return out
}

// splitEscaped splits on single commas, reading ",," as a literal comma,
// left to right as QEMU's get_opt_value does.
func splitEscaped(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		out = append(out, cur.String())
		cur.Reset()
	}
	return append(out, cur.String())
}

func escapeCommas(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// String renders the list back; ParseSubopts(s, k).String() == s.
func (so Subopts) String() string {
	var b strings.Builder
	for i, p := range so {
		if i > 0 {
			b.WriteByte(',')
		}
		switch {
		case p.Implied:
			b.WriteString(escapeCommas(p.Value))
		case p.Bare:
			b.WriteString(escapeCommas(p.Key))
		default:
			b.WriteString(escapeCommas(p.Key))
			b.WriteByte('=')
			b.WriteString(escapeCommas(p.Value))
		}
	}
	return b.String()
}

// Get returns the value of the last element with key; a bare key reads as
// "on", as QEMU reads it.
func (so Subopts) Get(key string) (string, bool) {
	for i := len(so) - 1; i >= 0; i-- {
		if so[i].Key == key {
			if so[i].Bare {
				return "on", true
			}
			return so[i].Value, true
		}
	}
	return "", false
}

// With returns a copy with key set to value: the last element with that
// key is replaced, or a new element is appended.
func (so Subopts) With(key, value string) Subopts {
	out := append(Subopts(nil), so...)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i].Key == key {
			out[i] = Pair{Key: key, Value: value, Implied: out[i].Implied}
			return out
		}
	}
	return append(out, Pair{Key: key, Value: value})
}
