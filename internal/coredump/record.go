package coredump

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
)

// Save writes the crash record, readable by its owner only (the launcher
// keeps encoding/json out of every launch's start-up; dmctl reads the
// record with it).
func (cr Crash) Save() error {
	return atomicfile.Write(cr.Record, cr.appendJSON(make([]byte, 0, 1024)), 0o600)
}

func (cr Crash) appendJSON(b []byte) []byte {
	b = append(b, `{"domid":`...)
	b = strconv.AppendInt(b, int64(cr.Domid), 10)
	b = appendField(b, "name", cr.Name)
	b = appendField(b, "kind", cr.Kind)
	b = appendField(b, "mode", cr.Mode)
	b = appendField(b, "qemu", cr.QEMU)
	if cr.BuildID != "" {
		b = appendField(b, "qemu_build_id", cr.BuildID)
	}
	b = append(b, `,"qemu_pid":`...)
	b = strconv.AppendInt(b, int64(cr.PID), 10)
	b = appendField(b, "signal", cr.Signal)
	b = append(b, `,"signal_number":`...)
	b = strconv.AppendInt(b, int64(cr.SignalNumber), 10)
	b = appendField(b, "time", cr.Time.Format(time.RFC3339Nano))
	if cr.Core != "" {
		b = appendField(b, "core", cr.Core)
		b = append(b, `,"core_size":`...)
		b = strconv.AppendInt(b, cr.CoreSize, 10)
		b = append(b, `,"core_allocated":`...)
		b = strconv.AppendInt(b, cr.CoreAllocated, 10)
	}
	b = append(b, `,"whole":`...)
	b = strconv.AppendBool(b, cr.Whole)
	for _, f := range []struct{ k, v string }{{"handler", cr.Handler}, {"note", cr.Note}} {
		if f.v != "" {
			b = appendField(b, f.k, f.v)
		}
	}
	b = append(b, `,"backtrace_lines":`...)
	b = strconv.AppendInt(b, int64(cr.Backtrace), 10)
	b = appendField(b, "record", cr.Record)
	return append(b, "}\n"...)
}

func appendField(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as a JSON string; invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
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
