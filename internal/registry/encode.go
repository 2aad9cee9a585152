package registry

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON writes the record as encoding/json would read it back. Every
// launch writes one, and encoding/json's reflection costs a short-lived
// process more than the file operations; readers (dmctl) use
// encoding/json.
func (r Record) appendJSON(b []byte) []byte {
	b = append(b, `{"domid":`...)
	b = strconv.AppendInt(b, int64(r.Domid), 10)
	b = appendField(b, "name", r.Name)
	b = appendField(b, "kind", r.Kind)
	b = appendField(b, "mode", r.Mode)
	b = append(b, `,"launcher":{"pid":`...)
	b = strconv.AppendInt(b, int64(r.Launcher.PID), 10)
	b = append(b, `,"start_time":`...)
	b = strconv.AppendUint(b, r.Launcher.StartTime, 10)
	b = append(b, `},"qemu_pid":`...)
	b = strconv.AppendInt(b, int64(r.QEMUPID), 10)
	b = appendField(b, "qemu", r.QEMU)
	b = append(b, `,"argv":[`...)
	for i, a := range r.Argv {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, a)
	}
	b = append(b, ']')
	for _, f := range []struct{ k, v string }{{"gdb", r.GDB}, {"console_pty", r.ConsolePTY}, {"console_log", r.ConsoleLog}, {"qmp", r.QMP}} {
		if f.v != "" {
			b = appendField(b, f.k, f.v)
		}
	}
	b = appendField(b, "started", r.Started.Format(time.RFC3339Nano))
	return append(b, "}\n"...)
}

func appendField(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

const hex = "0123456789abcdef"

// appendString quotes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
