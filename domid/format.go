package domid

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The lease file is read and rewritten by every launch, so it is a plain
// line format rather than JSON, whose reflection costs a short-lived
// process more than all its file operations together:
//
//	dmlaunch-leases 1
//	next 7
//	lease <domid> <kind> <pid> <start time> <allocated 0|1> <since, unix ns> <name, Go-quoted>
//	released <domid> <CLOCK_MONOTONIC seconds>
//	reaped <CLOCK_MONOTONIC seconds of the last check of every holder>
const formatHeader = "dmlaunch-leases 1"

func (st State) marshal() []byte {
	n := len(formatHeader) + 16 + 32*len(st.Released)
	for _, l := range st.Leases {
		n += 80 + len(l.Kind) + len(l.Name)
	}
	b := make([]byte, 0, n)
	b = append(b, formatHeader+"\nnext "...)
	b = strconv.AppendInt(b, int64(st.Next), 10)
	b = append(b, '\n')
	for _, l := range st.Leases {
		b = append(b, "lease "...)
		b = strconv.AppendInt(b, int64(l.Domid), 10)
		b = append(b, ' ')
		b = strconv.AppendQuote(b, l.Kind)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(l.Holder.PID), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, l.Holder.StartTime, 10)
		if l.Allocated {
			b = append(b, " 1 "...)
		} else {
			b = append(b, " 0 "...)
		}
		b = strconv.AppendInt(b, l.Since.UnixNano(), 10)
		b = append(b, ' ')
		b = strconv.AppendQuote(b, l.Name)
		b = append(b, '\n')
	}
	for _, r := range st.Released {
		b = append(b, "released "...)
		b = strconv.AppendInt(b, int64(r.Domid), 10)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, r.At, 'f', 6, 64)
		b = append(b, '\n')
	}
	if st.Reaped != 0 {
		b = append(b, "reaped "...)
		b = strconv.AppendFloat(b, st.Reaped, 'f', 6, 64)
		b = append(b, '\n')
	}
	return b
}

func unmarshalState(data []byte) (State, error) {
	st := State{Version: 1, Next: FirstGuest}
	line := 0
	bad := func(why string) (State, error) {
		return st, fmt.Errorf("line %d: %s", line, why)
	}
	// Lines are split in place: the file is a few hundred bytes, and a
	// scanner's buffer would cost a short-lived process fresh pages.
	rest := string(data)
	for rest != "" {
		var text string
		text, rest, _ = strings.Cut(rest, "\n")
		line++
		if line == 1 {
			if text != formatHeader {
				return bad(fmt.Sprintf("header %q, want %q", text, formatHeader))
			}
			continue
		}
		f, err := splitQuoted(text)
		if err != nil || len(f) == 0 {
			return bad("unreadable")
		}
		switch f[0] {
		case "next":
			if len(f) != 2 {
				return bad("next needs one number")
			}
			if st.Next, err = strconv.Atoi(f[1]); err != nil {
				return bad(err.Error())
			}
		case "lease":
			if len(f) != 8 {
				return bad(fmt.Sprintf("lease has %d fields, want 8", len(f)))
			}
			var l Lease
			var since int64
			var e1, e2, e3, e4 error
			l.Domid, e1 = strconv.Atoi(f[1])
			l.Kind = f[2]
			l.Holder.PID, e2 = strconv.Atoi(f[3])
			l.Holder.StartTime, e3 = strconv.ParseUint(f[4], 10, 64)
			l.Allocated = f[5] == "1"
			since, e4 = strconv.ParseInt(f[6], 10, 64)
			l.Name = f[7]
			for _, e := range []error{e1, e2, e3, e4} {
				if e != nil {
					return bad(e.Error())
				}
			}
			l.Since = time.Unix(0, since).UTC()
			st.Leases = append(st.Leases, l)
		case "released":
			if len(f) != 3 {
				return bad("released needs a domid and a time")
			}
			var r Released
			var e1, e2 error
			r.Domid, e1 = strconv.Atoi(f[1])
			r.At, e2 = strconv.ParseFloat(f[2], 64)
			if e1 != nil || e2 != nil {
				return bad("released has a bad number")
			}
			st.Released = append(st.Released, r)
		case "reaped":
			if len(f) != 2 {
				return bad("reaped needs a time")
			}
			if st.Reaped, err = strconv.ParseFloat(f[1], 64); err != nil {
				return bad("reaped has a bad number")
			}
		default:
			return bad(fmt.Sprintf("unknown record %q", f[0]))
		}
	}
	if line == 0 {
		return bad("empty file")
	}
	return st, nil
}

// splitQuoted splits on spaces; a field starting with '"' is a Go-quoted
// string that may hold spaces.
func splitQuoted(s string) ([]string, error) {
	out := make([]string, 0, 8) // a lease line's fields
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, err
			}
			u, err := strconv.Unquote(q)
			if err != nil {
				return nil, err
			}
			out = append(out, u)
			s = s[len(q):]
			continue
		}
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return append(out, s), nil
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}
