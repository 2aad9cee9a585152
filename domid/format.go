package domid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The lease file is read and rewritten by every launch, so it is a plain
// line format rather than JSON, whose reflection costs a short-lived
// process more than all its file operations together:
//
//	dmlaunch-leases 2
//	boot <the kernel's boot id when the file was written>
//	next 7
//	lease <domid> <kind> <pid> <start time> <allocated 0|1> <since, unix ns> <name, Go-quoted>
//	released <domid> <CLOCK_MONOTONIC seconds>
//	reaped <CLOCK_MONOTONIC seconds of the last check of every holder>
//	end
//
// The last line tells a whole file from one cut short at a line boundary,
// which would otherwise read as a file with fewer leases. Version 1 files
// had no boot and no end line.
const (
	formatVersion = 2
	formatHeader  = "dmlaunch-leases 2"
	formatV1      = "dmlaunch-leases 1"
	formatEnd     = "end"
)

func (st State) marshal() []byte {
	n := len(formatHeader) + 16 + 32*len(st.Released)
	for _, l := range st.Leases {
		n += 80 + len(l.Kind) + len(l.Name)
	}
	b := make([]byte, 0, n)
	b = append(b, formatHeader+"\n"...)
	if st.Boot != "" {
		b = append(b, "boot "...)
		b = append(b, st.Boot...)
		b = append(b, '\n')
	}
	b = append(b, "next "...)
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
	return append(b, formatEnd+"\n"...)
}

// unmarshalState reads a whole lease file, of this format or version 1
// (State.Version tells which). Any line it cannot read, or a missing end
// line, makes the file damaged.
func unmarshalState(data []byte) (State, error) {
	st := State{Version: formatVersion, Next: FirstGuest}
	line, ended := 0, false
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
			switch text {
			case formatHeader:
			case formatV1:
				st.Version = 1
			default:
				return bad(fmt.Sprintf("header %q, want %q", text, formatHeader))
			}
			continue
		}
		if ended {
			return bad("text after the end line")
		}
		if text == formatEnd && st.Version == formatVersion {
			ended = true
			continue
		}
		if err := st.parseLine(text); err != nil {
			return bad(err.Error())
		}
	}
	switch {
	case line == 0:
		return bad("empty file")
	case !ended && st.Version == formatVersion:
		return bad("no end line: the file was cut short")
	}
	return st, nil
}

// salvage reads what it can of a damaged lease file: every line that
// parses on its own. A lease kept from it is checked against its holder
// like any other.
func salvage(data []byte) State {
	st := State{Version: formatVersion, Next: FirstGuest}
	for _, text := range strings.Split(string(data), "\n") {
		var one State
		if one.parseLine(text) != nil {
			continue
		}
		st.Leases = append(st.Leases, one.Leases...)
		st.Released = append(st.Released, one.Released...)
		if one.Next != 0 {
			st.Next = one.Next
		}
	}
	return st
}

// parseLine adds one record line to st.
func (st *State) parseLine(text string) error {
	f, err := splitQuoted(text)
	if err != nil || len(f) == 0 {
		return errors.New("unreadable")
	}
	switch f[0] {
	case "boot":
		if len(f) != 2 {
			return errors.New("boot needs one id")
		}
		st.Boot = f[1]
	case "next":
		if len(f) != 2 {
			return errors.New("next needs one number")
		}
		if st.Next, err = strconv.Atoi(f[1]); err != nil {
			return err
		}
	case "lease":
		if len(f) != 8 {
			return fmt.Errorf("lease has %d fields, want 8", len(f))
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
		if err := errors.Join(e1, e2, e3, e4); err != nil {
			return err
		}
		l.Since = time.Unix(0, since).UTC()
		st.Leases = append(st.Leases, l)
	case "released":
		if len(f) != 3 {
			return errors.New("released needs a domid and a time")
		}
		var r Released
		var e1, e2 error
		r.Domid, e1 = strconv.Atoi(f[1])
		r.At, e2 = strconv.ParseFloat(f[2], 64)
		if e1 != nil || e2 != nil {
			return errors.New("released has a bad number")
		}
		st.Released = append(st.Released, r)
	case "reaped":
		if len(f) != 2 {
			return errors.New("reaped needs a time")
		}
		if st.Reaped, err = strconv.ParseFloat(f[1], 64); err != nil {
			return errors.New("reaped has a bad number")
		}
	default:
		return fmt.Errorf("unknown record %q", f[0])
	}
	return nil
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
