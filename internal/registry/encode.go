package registry

import (
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/jsonenc"
)

// appendJSON writes the record as encoding/json would read it back. Every
// launch writes one, and encoding/json's reflection costs a short-lived
// process more than the file operations; readers (dmctl) use
// encoding/json.
func (r Record) appendJSON(b []byte) []byte {
	b = append(b, `{"domid":`...)
	b = strconv.AppendInt(b, int64(r.Domid), 10)
	b = jsonenc.AppendField(b, "name", r.Name)
	b = jsonenc.AppendField(b, "kind", r.Kind)
	b = jsonenc.AppendField(b, "mode", r.Mode)
	b = append(b, `,"launcher":{"pid":`...)
	b = strconv.AppendInt(b, int64(r.Launcher.PID), 10)
	b = append(b, `,"start_time":`...)
	b = strconv.AppendUint(b, r.Launcher.StartTime, 10)
	b = append(b, `},"qemu_pid":`...)
	b = strconv.AppendInt(b, int64(r.QEMUPID), 10)
	b = jsonenc.AppendField(b, "qemu", r.QEMU)
	b = append(b, `,"argv":[`...)
	for i, a := range r.Argv {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.AppendString(b, a)
	}
	b = append(b, ']')
	for _, f := range []struct{ k, v string }{{"gdb", r.GDB}, {"console_pty", r.ConsolePTY}, {"console_log", r.ConsoleLog}, {"qmp", r.QMP}, {"pidfile", r.PIDFile}} {
		if f.v != "" {
			b = jsonenc.AppendField(b, f.k, f.v)
		}
	}
	b = jsonenc.AppendField(b, "started", r.Started.Format(time.RFC3339Nano))
	return append(b, "}\n"...)
}
