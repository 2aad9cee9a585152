package registry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
		Started: time.Date(2026, 11, 21, 13, 0, 0, 123456789, time.UTC), PIDFile: "/run/qemu-dom0.pid",
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

// summary is what ParseSummary reads, argv decoded.
type summary struct {
	Domid            int
	Kind, Name, Mode string
	Launcher         proc.Identity
	PIDFile          string
	Argv             []string
}

func summaryOf(r Record) summary {
	return summary{r.Domid, r.Kind, r.Name, r.Mode, r.Launcher, r.PIDFile, r.Argv}
}

func readable(s Summary) summary {
	return summary{s.Domid, s.Kind, s.Name, s.Mode, s.Launcher, s.PIDFile, s.argv()}
}

func TestParseSummaryReadsWhatEncodingJSONReads(t *testing.T) {
	r := sample()
	indented, err := json.MarshalIndent(r, "", "  ")
	require.NoError(t, err)
	for name, b := range map[string][]byte{"appendJSON": r.appendJSON(nil), "encoding/json, indented": indented} {
		t.Run(name, func(t *testing.T) {
			s, err := ParseSummary(b)
			require.NoError(t, err)
			assert.Equal(t, summaryOf(r), readable(s))
		})
	}
	escaped := `{"domid":1,"kind":"hvm","launcher":{"pid":1},"name":"\ud83d\ude00 \ud800x \udc00\u0041 \ud800\u0041 \ud800\ud800\udc00 \u00e9\n\/"}`
	var want Record
	require.NoError(t, json.Unmarshal([]byte(escaped), &want))
	s, err := ParseSummary([]byte(escaped))
	require.NoError(t, err)
	assert.Equal(t, want.Name, s.Name, "escapes and surrogates decode as encoding/json decodes them")

	for name, text := range map[string]string{
		"truncated":   string(r.appendJSON(nil)[:60]),
		"no launcher": `{"domid":3,"kind":"hvm"}`,
		"not json":    "garbage",
		"deep":        `{"domid":3,"kind":"hvm","launcher":{"pid":1},"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		"trailing":    `{"domid":3,"kind":"hvm","launcher":{"pid":1}} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseSummary([]byte(text))
			assert.Error(t, err)
		})
	}
}

func FuzzParseSummary(f *testing.F) {
	f.Add("plain", "a b", 5)
	f.Add("\xff\xfe bad utf-8 \xed\xa0\x80", "\u2028\"\\", 0)
	f.Fuzz(func(t *testing.T, name, arg string, domid int) {
		r := sample()
		r.Name, r.Argv, r.Domid, r.PIDFile = name, []string{arg, name}, max(domid, 0), arg
		var want Record
		require.NoError(t, json.Unmarshal(r.appendJSON(nil), &want))
		s, err := ParseSummary(r.appendJSON(nil))
		require.NoError(t, err)
		assert.Equal(t, summaryOf(want), readable(s))
	})
}

func TestReadFileRefusesWhatIsNotARecord(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "1.json")
	require.NoError(t, os.WriteFile(good, sample().appendJSON(nil), 0o600))
	link := filepath.Join(dir, "2.json")
	require.NoError(t, os.Symlink("/dev/zero", link))
	fifo := filepath.Join(dir, "3.json")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "4.json")
	require.NoError(t, os.WriteFile(big, make([]byte, MaxSize+1), 0o600))
	loose := filepath.Join(dir, "5.json")
	require.NoError(t, os.WriteFile(loose, nil, 0o600))
	require.NoError(t, os.Chmod(loose, 0o666))

	_, err := ReadFile(good, os.Geteuid())
	require.NoError(t, err)
	for path, want := range map[string]string{link: "symbolic link", fifo: "not a regular file", big: "over the 4194304-byte limit", loose: "writable by others"} {
		_, err := ReadFile(path, os.Geteuid())
		var bad *BadRecordError
		require.ErrorAs(t, err, &bad, path)
		assert.Contains(t, err.Error(), want)
	}
	_, err = ReadFile(good, os.Geteuid()+1)
	assert.ErrorContains(t, err, "is owned by uid", "another user's record is not trusted")
	_, err = ReadFile(filepath.Join(dir, "9.json"), -1)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestParseName(t *testing.T) {
	for name, want := range map[string]struct {
		domid     int
		qdisk, ok bool
	}{
		"5.json": {5, false, true}, "32751-qdisk.json": {32751, true, true}, "domids": {}, "5.json.new.1.2.x": {},
		"-1.json": {}, "x.json": {}, ".json": {}, "123456.json": {},
	} {
		d, q, ok := ParseName(name)
		assert.Equal(t, want, struct {
			domid     int
			qdisk, ok bool
		}{d, q, ok}, name)
	}
}

func TestDomidsReadsNamesOnly(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"3.json", "7-qdisk.json", "domids", "9.json.new.1.2.x", "x.json"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), nil, 0o600))
	}
	require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, "11.json")))
	assert.Equal(t, map[int]bool{3: true, 7: true, 11: true}, Domids(dir))
	assert.Empty(t, Domids(filepath.Join(dir, "none")))
}
