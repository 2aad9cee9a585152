package registry

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() Record {
	return Record{
		Domid: 5, Name: `web "1" <&> \ tab` + "\t\x01", Kind: "hvm", Mode: "gdb,console",
		Launcher: proc.Identity{PID: 42, StartTime: 99}, QEMUPID: 43, QEMU: "/usr/libexec/xen-qemu-system-i386",
		Argv: []string{"-name", "a b", "ünï", ""}, GDB: "127.0.0.1:1239", ConsolePTY: "/dev/pts/3",
		ConsoleLog: "/var/log/xen/dmlaunch-console-5.log", QMP: "/run/dmlaunch/5.qmp",
		Started: time.Date(2026, 11, 21, 13, 0, 0, 123456789, time.UTC),
	}
}

func TestEncodingReadsBackWithEncodingJSON(t *testing.T) {
	for _, r := range []Record{sample(), {Argv: []string{}}} {
		var got Record
		require.NoError(t, json.Unmarshal(r.appendJSON(nil), &got), "%s", r.appendJSON(nil))
		if r.Argv == nil {
			r.Argv = []string{}
		}
		assert.Equal(t, r, got)
	}
}

func FuzzEncoding(f *testing.F) {
	f.Add("plain", "a b", 5)
	f.Add("\xff\xfe bad utf-8", "\u2028", 0)
	f.Fuzz(func(t *testing.T, name, arg string, domid int) {
		r := sample()
		r.Name, r.Argv, r.Domid = name, []string{arg, name}, domid
		var got Record
		require.NoError(t, json.Unmarshal(r.appendJSON(nil), &got))
		// encoding/json's own encoding is the reference for what a string
		// becomes (invalid UTF-8 turns into U+FFFD).
		var want Record
		ref, err := json.Marshal(r)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(ref, &want))
		assert.Equal(t, want, got)
	})
}
