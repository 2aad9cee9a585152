package coredump

import (
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/jsonenc"

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
	b = jsonenc.AppendField(b, "name", cr.Name)
	b = jsonenc.AppendField(b, "kind", cr.Kind)
	b = jsonenc.AppendField(b, "mode", cr.Mode)
	b = jsonenc.AppendField(b, "qemu", cr.QEMU)
	if cr.BuildID != "" {
		b = jsonenc.AppendField(b, "qemu_build_id", cr.BuildID)
	}
	b = append(b, `,"qemu_pid":`...)
	b = strconv.AppendInt(b, int64(cr.PID), 10)
	b = jsonenc.AppendField(b, "signal", cr.Signal)
	b = append(b, `,"signal_number":`...)
	b = strconv.AppendInt(b, int64(cr.SignalNumber), 10)
	b = jsonenc.AppendField(b, "time", cr.Time.Format(time.RFC3339Nano))
	if cr.Core != "" {
		b = jsonenc.AppendField(b, "core", cr.Core)
		b = append(b, `,"core_size":`...)
		b = strconv.AppendInt(b, cr.CoreSize, 10)
		b = append(b, `,"core_allocated":`...)
		b = strconv.AppendInt(b, cr.CoreAllocated, 10)
	}
	b = append(b, `,"whole":`...)
	b = strconv.AppendBool(b, cr.Whole)
	for _, f := range []struct{ k, v string }{{"handler", cr.Handler}, {"note", cr.Note}} {
		if f.v != "" {
			b = jsonenc.AppendField(b, f.k, f.v)
		}
	}
	b = append(b, `,"backtrace_lines":`...)
	b = strconv.AppendInt(b, int64(cr.Backtrace), 10)
	b = jsonenc.AppendField(b, "record", cr.Record)
	return append(b, "}\n"...)
}
