package registry

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ParseSummary reads the domid, kind, name, mode, launcher and pidfile of
// a record with a small JSON scanner of its own: the lease allocator
// rebuilds its state from records, and a launch sweeps ended ones, inside
// dmlaunch, which does not link encoding/json (see appendJSON). The argv
// is kept undecoded until a pidfile must be checked against it. Other
// fields are skipped whatever they hold; the order of fields and white
// space do not matter.
func ParseSummary(b []byte) (Summary, error) {
	var s Summary
	sc := &scanner{b: b}
	seen := map[string]bool{}
	err := sc.object(func(key string) error {
		seen[key] = true
		var err error
		switch key {
		case "domid":
			s.Domid, err = sc.integer()
		case "kind":
			s.Kind, err = sc.str()
		case "name":
			s.Name, err = sc.str()
		case "mode":
			s.Mode, err = sc.str()
		case "pidfile":
			s.PIDFile, err = sc.str()
		case "argv":
			start := sc.i
			if err = sc.skip(0); err == nil {
				s.rawArgv = b[start:sc.i]
			}
		case "launcher":
			err = sc.object(func(key string) error {
				var err error
				switch key {
				case "pid":
					s.Launcher.PID, err = sc.integer()
				case "start_time":
					var n int
					n, err = sc.integer()
					s.Launcher.StartTime = uint64(n)
				default:
					err = sc.skip(0)
				}
				return err
			})
		default:
			err = sc.skip(0)
		}
		return err
	})
	if err != nil {
		return s, err
	}
	sc.space()
	if sc.i != len(sc.b) {
		return s, sc.fail("text after the record")
	}
	for _, k := range []string{"domid", "kind", "launcher"} {
		if !seen[k] {
			return s, fmt.Errorf("no %q field", k)
		}
	}
	if s.Launcher.PID <= 0 {
		return s, errors.New("no launcher pid")
	}
	return s, nil
}

// argv decodes the record's argv; nil when it has none or it does not
// parse as a list of strings.
func (s Summary) argv() []string {
	if len(s.rawArgv) == 0 {
		return nil
	}
	sc := &scanner{b: s.rawArgv}
	if sc.expect('[') != nil {
		return nil
	}
	out := []string{}
	if sc.peek() == ']' {
		return out
	}
	for {
		a, err := sc.str()
		if err != nil {
			return nil
		}
		out = append(out, a)
		switch sc.peek() {
		case ',':
			sc.i++
		case ']':
			return out
		default:
			return nil
		}
	}
}

type scanner struct {
	b []byte
	i int
}

// maxDepth bounds nesting, so a hostile file cannot exhaust the stack.
const maxDepth = 32

func (sc *scanner) fail(why string) error { return fmt.Errorf("offset %d: %s", sc.i, why) }

func (sc *scanner) space() {
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

func (sc *scanner) peek() byte {
	sc.space()
	if sc.i < len(sc.b) {
		return sc.b[sc.i]
	}
	return 0
}

func (sc *scanner) expect(c byte) error {
	if sc.peek() != c {
		return sc.fail(fmt.Sprintf("want %q", c))
	}
	sc.i++
	return nil
}

// object calls field for each key, with the scanner at its value.
func (sc *scanner) object(field func(key string) error) error {
	if err := sc.expect('{'); err != nil {
		return err
	}
	if sc.peek() == '}' {
		sc.i++
		return nil
	}
	for {
		key, err := sc.str()
		if err != nil {
			return err
		}
		if err := sc.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch sc.peek() {
		case ',':
			sc.i++
		case '}':
			sc.i++
			return nil
		default:
			return sc.fail("want ',' or '}'")
		}
	}
}

func (sc *scanner) str() (string, error) {
	if err := sc.expect('"'); err != nil {
		return "", err
	}
	var out []byte
	for sc.i < len(sc.b) {
		c := sc.b[sc.i]
		switch {
		case c == '"':
			sc.i++
			return string(out), nil
		case c < 0x20:
			return "", sc.fail("control character in a string")
		case c != '\\':
			r, size := utf8.DecodeRune(sc.b[sc.i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, sc.b[sc.i:sc.i+size]...)
			}
			sc.i += size
			continue
		}
		if sc.i+1 >= len(sc.b) {
			break
		}
		esc := sc.b[sc.i+1]
		sc.i += 2
		switch esc {
		case '"', '\\', '/':
			out = append(out, esc)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := sc.hex4()
			if !ok {
				return "", sc.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A pair makes one rune; anything else is U+FFFD, and a
				// following escape that is not the pair's second half
				// is read on its own (as encoding/json does).
				low, ok := rune(-1), false
				if sc.i+1 < len(sc.b) && sc.b[sc.i] == '\\' && sc.b[sc.i+1] == 'u' {
					save := sc.i
					sc.i += 2
					if low, ok = sc.hex4(); !ok {
						return "", sc.fail("bad \\u escape")
					}
					if utf16.DecodeRune(r, low) == utf8.RuneError {
						sc.i = save
					}
				}
				r = utf16.DecodeRune(r, low)
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", sc.fail("bad escape")
		}
	}
	return "", sc.fail("unterminated string")
}

func (sc *scanner) hex4() (rune, bool) {
	if sc.i+4 > len(sc.b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(sc.b[sc.i:sc.i+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	sc.i += 4
	return rune(n), true
}

// number returns the text of a JSON number.
func (sc *scanner) number() (string, error) {
	sc.space()
	start := sc.i
	for sc.i < len(sc.b) {
		c := sc.b[sc.i]
		if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			sc.i++
			continue
		}
		break
	}
	if start == sc.i {
		return "", sc.fail("want a number")
	}
	return string(sc.b[start:sc.i]), nil
}

func (sc *scanner) integer() (int, error) {
	text, err := sc.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(text)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count", text)
	}
	return n, nil
}

// skip passes over one value of any kind.
func (sc *scanner) skip(depth int) error {
	if depth > maxDepth {
		return sc.fail("nested too deep")
	}
	switch c := sc.peek(); {
	case c == '"':
		_, err := sc.str()
		return err
	case c == '{':
		return sc.object(func(string) error { return sc.skip(depth + 1) })
	case c == '[':
		sc.i++
		if sc.peek() == ']' {
			sc.i++
			return nil
		}
		for {
			if err := sc.skip(depth + 1); err != nil {
				return err
			}
			switch sc.peek() {
			case ',':
				sc.i++
			case ']':
				sc.i++
				return nil
			default:
				return sc.fail("want ',' or ']'")
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		_, err := sc.number()
		return err
	}
	for _, word := range []string{"true", "false", "null"} {
		if len(sc.b)-sc.i >= len(word) && string(sc.b[sc.i:sc.i+len(word)]) == word {
			sc.i += len(word)
			return nil
		}
	}
	return sc.fail("want a value")
}
