package launcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A launch of each shape the toolstack starts, for the damage table.
// Backends (the probe, a query, qdisk, dom0's own QEMU) must pass through
// whatever is damaged; a guest's launch is refused only by damage to
// something it uses.
var damageLaunches = []struct {
	name    string
	args    []string
	env     []string
	backend bool
	domid   int // its lease and record, or -1
}{
	{"probe", strings.Fields("-S -no-user-config -nodefaults -nographic -machine none,accel=xen"), nil, true, -1},
	{"query", []string{"-version"}, nil, true, -1},
	{"qdisk", strings.Fields("-xen-domid 3 -xen-attach -name domain-3 -nographic -M xenpv -monitor /dev/null -serial /dev/null -parallel /dev/null"), nil, true, -1},
	{"dom0", strings.Fields("-xen-domid 0 -xen-attach -name dom0 -nographic -M xenpv -daemonize -monitor none -serial none -parallel none -pidfile /run/qemu-dom0.pid"), nil, true, -1},
	{"hvm", strings.Fields("-xen-domid 5 -name hvm1 -machine xenfv"), nil, false, 5},
	{"leased", strings.Fields("-name nodomid -machine pc"), nil, false, 1},
	{"console", strings.Fields("-xen-domid 6 -name dbg -machine xenfv"), []string{"DMLAUNCH_DEBUG=console"}, false, 6},
}

// refusal is what a damaged launch must say: its status and words.
type refusal struct {
	status int
	want   []string
}

// mountTmpfs mounts a tmpfs of its own for the test (root only).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mounting a tmpfs needs root")
		}
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, opts))
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes into dir until its file system says it is full.
func fill(t *testing.T, dir string) {
	f, err := os.Create(filepath.Join(dir, "filler"))
	require.NoError(t, err)
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			require.ErrorIs(t, err, unix.ENOSPC)
			return
		}
	}
}

func TestSettingsAndDirectoryDamage(t *testing.T) {
	configRefusal := func(what string) map[string]refusal {
		r := refusal{ExitBadInput, []string{"DMLAUNCH_CONFIG=", what, "dmlaunch(8) lists every setting"}}
		return map[string]refusal{"hvm": r, "leased": r, "console": r}
	}
	stateRefusal := func(what string) map[string]refusal {
		r := refusal{ExitBadInput, []string{"state directory ", what, "DMLAUNCH_STATE_DIR"}}
		return map[string]refusal{"hvm": r, "leased": r, "console": r}
	}
	cases := []struct {
		name string
		// setup returns the settings of the damaged machine.
		setup   func(t *testing.T) []string
		refused map[string]refusal
		// settings: backends log the settings problem they pass through.
		settings bool
		// stateBroken: backends log that they keep no record.
		stateBroken bool
	}{
		{name: "config missing", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_CONFIG=" + filepath.Join(t.TempDir(), "missing.conf")}
		}, refused: configRefusal("no such file or directory")},
		{name: "config a directory", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_CONFIG=" + t.TempDir()}
		}, refused: configRefusal("is a directory")},
		{name: "config a FIFO", settings: true, setup: func(t *testing.T) []string {
			fifo := filepath.Join(t.TempDir(), "fifo")
			require.NoError(t, unix.Mkfifo(fifo, 0o600))
			return []string{"DMLAUNCH_CONFIG=" + fifo}
		}, refused: configRefusal("is not a regular file")},
		{name: "config /dev/zero", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_CONFIG=/dev/zero"}
		}, refused: configRefusal("is not a regular file")},
		{name: "config oversized", settings: true, setup: func(t *testing.T) []string {
			big := filepath.Join(t.TempDir(), "big.conf")
			require.NoError(t, os.WriteFile(big, make([]byte, 10<<20), 0o644))
			return []string{"DMLAUNCH_CONFIG=" + big}
		}, refused: configRefusal("a settings file may have")},
		{name: "unknown setting", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_DEBUGG=gdb"}
		}, refused: map[string]refusal{
			"hvm":     {ExitBadInput, []string{`DMLAUNCH_DEBUGG="gdb" (environment) is not a dmlaunch setting; unset it`}},
			"leased":  {ExitBadInput, []string{"DMLAUNCH_DEBUGG"}},
			"console": {ExitBadInput, []string{"DMLAUNCH_DEBUGG"}},
		}},
		{name: "debug port setting bad, no gdb mode", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_GDB_LISTEN=localhost:1234"}
		}},
		{name: "state dir setting relative", settings: true, setup: func(t *testing.T) []string {
			return []string{"DMLAUNCH_STATE_DIR=run/dmlaunch"}
		}, refused: map[string]refusal{
			"hvm":     {ExitBadInput, []string{`DMLAUNCH_STATE_DIR="run/dmlaunch" (environment) must be an absolute path`}},
			"leased":  {ExitBadInput, []string{"DMLAUNCH_STATE_DIR"}},
			"console": {ExitBadInput, []string{"DMLAUNCH_STATE_DIR"}},
		}},
		{name: "state dir full", setup: func(t *testing.T) []string {
			dir := mountTmpfs(t, "size=64k,mode=0700")
			fill(t, dir)
			return []string{"DMLAUNCH_STATE_DIR=" + dir}
		}, refused: stateRefusal("no space left on device; its file system is full"), stateBroken: true},
		{name: "state dir read-only", setup: func(t *testing.T) []string {
			dir := mountTmpfs(t, "mode=0700")
			require.NoError(t, unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "mode=0700"))
			return []string{"DMLAUNCH_STATE_DIR=" + dir}
		}, refused: stateRefusal("read-only file system; its file system is read-only: remount it read-write"), stateBroken: true},
		{name: "state dir under a regular file", setup: func(t *testing.T) []string {
			file := filepath.Join(t.TempDir(), "file")
			require.NoError(t, os.WriteFile(file, nil, 0o600))
			return []string{"DMLAUNCH_STATE_DIR=" + filepath.Join(file, "state")}
		}, refused: stateRefusal("not a directory; something in its path is not a directory"), stateBroken: true},
		{name: "log dir cannot be made", setup: func(t *testing.T) []string {
			file := filepath.Join(t.TempDir(), "file")
			require.NoError(t, os.WriteFile(file, nil, 0o600))
			return []string{"DMLAUNCH_LOG_DIR=" + filepath.Join(file, "log")}
		}, refused: map[string]refusal{
			"console": {ExitBadInput, []string{"console log directory ", "not a directory", "DMLAUNCH_LOG_DIR"}},
		}},
		// The directory is there but the console log cannot be created
		// in it: the operator's to fix, as above, not an internal error.
		{name: "log dir read-only", setup: func(t *testing.T) []string {
			dir := mountTmpfs(t, "mode=0755")
			require.NoError(t, unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "mode=0755"))
			return []string{"DMLAUNCH_LOG_DIR=" + dir}
		}, refused: map[string]refusal{
			"console": {ExitBadInput, []string{"console log directory ", "read-only file system; its file system is read-only: remount it read-write, or set DMLAUNCH_LOG_DIR to another directory"}},
		}},
	}

	// Nothing may be written where the operator did not point dmlaunch:
	// no record of this test's launches (their QEMU is this binary) in the
	// default state directory.
	t.Cleanup(func() {
		ents, _ := os.ReadDir(DefaultStateDir)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(DefaultStateDir, e.Name()))
			assert.NotContains(t, string(b), os.Args[0], "a launch wrote %s, in a directory no test names", e.Name())
		}
	})

	table := []string{"| damage | " + strings.Join(launchNames(), " | ") + " |", "|---" + strings.Repeat("|---", len(damageLaunches)) + "|"}
	wronglyBlocked := 0
	for _, tc := range cases {
		row := []string{tc.name}
		t.Run(tc.name, func(t *testing.T) {
			env := tc.setup(t)
			for _, l := range damageLaunches {
				cell := "?"
				t.Run(l.name, func(t *testing.T) {
					state := filepath.Join(t.TempDir(), "state")
					base := append([]string{"DMLAUNCH_LOG_DIR=" + filepath.Join(t.TempDir(), "log")}, l.env...)
					r := launch(t, run{args: l.args, env: append(base, env...), state: state})
					dry := launch(t, run{args: l.args, env: append(append(base, env...), "DMLAUNCH_DRY_RUN=1"), state: state})
					stateDir := state
					for _, kv := range env {
						if v, ok := strings.CutPrefix(kv, "DMLAUNCH_STATE_DIR="); ok && filepath.IsAbs(v) {
							stateDir = v
						}
					}
					want, refused := tc.refused[l.name]
					if !refused {
						cell = "runs"
						if l.backend && !r.started {
							wronglyBlocked++
						}
						assert.True(t, r.started, "QEMU runs")
						assert.Equal(t, 0, r.status)
						assert.Equal(t, 0, dry.status, "the dry run agrees: %s", dry.stderr)
						assert.NotContains(t, r.stderr, "internal error")
						if tc.settings {
							assert.Equal(t, 1, strings.Count(r.stderr, "settings ignored: "), "the settings problem is logged once")
							cell = "runs, logs the problem"
						}
						if (tc.stateBroken || tc.name == "state dir setting relative") && (l.name == "qdisk" || l.name == "dom0") {
							assert.Equal(t, 1, strings.Count(r.stderr, "no registry record, passing through anyway"))
							cell = "runs, logs: no record"
						}
						assert.Equal(t, 1, strings.Count(r.stderr, ", pass-through: ")+strings.Count(r.stderr, ", debug console;"), "one launch line")
						return
					}
					cell = fmt.Sprintf("refused, %d", want.status)
					assert.False(t, r.started, "QEMU must not start")
					assert.Equal(t, want.status, r.status)
					assert.Equal(t, want.status, dry.status, "the dry run refuses as the launch does: %s", dry.stderr)
					for _, w := range want.want {
						assert.Contains(t, r.stderr, w)
						assert.Contains(t, dry.stderr, w)
					}
					assert.NotContains(t, r.stderr, "internal error")
					assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %s", r.stderr)
					if entries, err := inventory.List(stateDir); err == nil {
						assert.Empty(t, entries, "no registry record is left behind")
					}
					if b, err := os.ReadFile(filepath.Join(stateDir, domid.LeaseFile)); err == nil {
						assert.NotContains(t, string(b), fmt.Sprintf("lease %d ", l.domid), "no lease is left behind")
					}
				})
				row = append(row, cell)
			}
		})
		table = append(table, "| "+strings.Join(row, " | ")+" |")
	}
	t.Logf("damage to settings and directories: %d cases x %d launches, %d backends wrongly blocked\n%s",
		len(cases), len(damageLaunches), wronglyBlocked, strings.Join(table, "\n"))
	assert.Zero(t, wronglyBlocked)
}

func launchNames() []string {
	var out []string
	for _, l := range damageLaunches {
		out = append(out, l.name)
	}
	return out
}
