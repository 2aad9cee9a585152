package launcher

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func load(t *testing.T, file string, env ...string) (Config, error) {
	if file != "" {
		env = append(env, "DMLAUNCH_CONFIG="+file)
	} else {
		env = append(env, "DMLAUNCH_CONFIG=")
	}
	return LoadConfig(EnvLookup(env), env)
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := load(t, "")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:1234"), cfg.GDBListen)
	assert.Equal(t, "/run/dmlaunch", cfg.StateDir)
	assert.Equal(t, "/var/log/xen", cfg.LogDir)
	assert.Equal(t, "gdbserver", cfg.GDBServer)
	assert.Empty(t, cfg.Debug)
	assert.False(t, cfg.DryRun)
	assert.Equal(t, coredump.Limit(coredump.Unlimited), cfg.CoreLimit)
	assert.False(t, cfg.CoreLimitSet, "pass-through leaves the inherited limit alone")
}

func TestCoreLimitSetting(t *testing.T) {
	cfg, err := load(t, "", "DMLAUNCH_CORE_LIMIT=0")
	require.NoError(t, err)
	assert.Equal(t, coredump.Limit(0), cfg.CoreLimit)
	assert.True(t, cfg.CoreLimitSet)
	cfg, err = load(t, "", "DMLAUNCH_CORE_LIMIT=512M")
	require.NoError(t, err)
	assert.Equal(t, coredump.Limit(512<<20), cfg.CoreLimit)
}

func TestConfigFileAndEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dmlaunch.conf")
	require.NoError(t, os.WriteFile(file, []byte(`# comment
DMLAUNCH_DEBUG = gdb,console
DMLAUNCH_DEBUG_DOMAINS="web*, 7"
DMLAUNCH_STATE_DIR=/run/from-file

DMLAUNCH_GDB_LISTEN='[::1]:4000'
`), 0o644))
	cfg, err := load(t, file, "DMLAUNCH_STATE_DIR=/run/from-env")
	require.NoError(t, err)
	assert.Equal(t, []string{"gdb", "console"}, cfg.Debug)
	assert.Equal(t, []string{"web*", "7"}, cfg.DebugDomains)
	assert.Equal(t, "/run/from-env", cfg.StateDir, "the environment wins over the file")
	assert.Equal(t, "environment", cfg.Origin("DMLAUNCH_STATE_DIR"))
	assert.Equal(t, file+" line 2", cfg.Origin("DMLAUNCH_DEBUG"))
	assert.Equal(t, netip.MustParseAddrPort("[::1]:4000"), cfg.GDBListen)
	assert.Equal(t, file, cfg.File)
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		file string
		want string
	}{
		{"unknown name", []string{"DMLAUNCH_DEBUGG=gdb"}, "", `DMLAUNCH_DEBUGG="gdb" (environment) is not a dmlaunch setting`},
		{"bad mode", []string{"DMLAUNCH_DEBUG=gbd"}, "", `unknown mode "gbd"`},
		{"both gdb modes", []string{"DMLAUNCH_DEBUG=gdb,gdb-wait"}, "", "both gdb and gdb-wait"},
		{"off mixed", []string{"DMLAUNCH_DEBUG=off,gdb"}, "", "mixes off"},
		{"bad listen", []string{"DMLAUNCH_GDB_LISTEN=localhost"}, "", "must be ADDR:BASEPORT"},
		{"port zero", []string{"DMLAUNCH_GDB_LISTEN=127.0.0.1:0"}, "", "must be ADDR:BASEPORT"},
		{"wide listen without allow", []string{"DMLAUNCH_GDB_LISTEN=0.0.0.0:1234"}, "", "not a loopback address"},
		{"bad allow", []string{"DMLAUNCH_GDB_LISTEN=0.0.0.0:1234", "DMLAUNCH_GDB_ALLOW=10.0.0.0/33"}, "", "not a network in CIDR form"},
		{"relative qemu", []string{"DMLAUNCH_QEMU=qemu"}, "", "must be an absolute path"},
		{"bad domid", []string{"DMLAUNCH_DOMID=32752"}, "", "DMLAUNCH_DOMID"},
		{"relative state", []string{"DMLAUNCH_STATE_DIR=run"}, "", "DMLAUNCH_STATE_DIR"},
		{"bad dry run", []string{"DMLAUNCH_DRY_RUN=maybe"}, "", "must be 1 or 0"},
		{"bad core limit", []string{"DMLAUNCH_CORE_LIMIT=big"}, "", "DMLAUNCH_CORE_LIMIT=\"big\" (environment) is not a size"},
		{"bad glob", []string{"DMLAUNCH_DEBUG_DOMAINS=[a"}, "", "malformed pattern"},
		{"file: not key=value", nil, "garbage\n", "line 1"},
		{"file: unknown key", nil, "DMLAUNCH_X=1\n", "DMLAUNCH_X"},
		{"file: names another file", nil, "DMLAUNCH_CONFIG=/x\n", "DMLAUNCH_CONFIG"},
		{"missing explicit file", []string{"DMLAUNCH_CONFIG=/nonexistent/dmlaunch.conf"}, "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := ""
			if tt.file != "" {
				file = filepath.Join(t.TempDir(), "c.conf")
				require.NoError(t, os.WriteFile(file, []byte(tt.file), 0o644))
			}
			var err error
			if len(tt.env) > 0 && tt.env[0] == "DMLAUNCH_CONFIG=/nonexistent/dmlaunch.conf" {
				_, err = LoadConfig(EnvLookup(tt.env), tt.env)
			} else {
				_, err = load(t, file, tt.env...)
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			var se *SettingError
			if errors.As(err, &se) {
				assert.Equal(t, ExitBadInput, ExitCode(err))
			}
		})
	}
}

func TestWideListenWithAllowlist(t *testing.T) {
	cfg, err := load(t, "", "DMLAUNCH_GDB_LISTEN=0.0.0.0:2000", "DMLAUNCH_GDB_ALLOW=192.0.2.7/24, 127.0.0.1/32")
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("127.0.0.1/32")}, cfg.GDBAllow)
}

func TestDebugDomainSelection(t *testing.T) {
	tests := []struct {
		domains []string
		domid   int
		name    string
		want    bool
	}{
		{nil, 5, "x", true},
		{[]string{"5"}, 5, "x", true},
		{[]string{"6"}, 5, "x", false},
		{[]string{"web*"}, 5, "web-01", true},
		{[]string{"web*"}, 5, "db-01", false},
		{[]string{"1?"}, 12, "", true},
		{[]string{"*"}, 5, "", true},
	}
	for _, tt := range tests {
		p := &Plan{Config: Config{DebugDomains: tt.domains}, Domid: tt.domid, Name: tt.name}
		assert.Equal(t, tt.want, p.selected(), "%v vs domain %d (%s)", tt.domains, tt.domid, tt.name)
	}
}

// The settings file is read only when it is a small regular file that
// only its owner (root, or dmlaunch's own user) may change; anything else
// is one problem that names the file and the fix, found at once: a FIFO
// must not block and a device must not be read without end.
func TestConfigFileMustBeASmallPlainFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "big.conf")
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("# padding\n", MaxConfigSize/10+1)), 0o644))
	loose := filepath.Join(dir, "loose.conf")
	require.NoError(t, os.WriteFile(loose, []byte("DMLAUNCH_DEBUG=gdb\n"), 0o600))
	require.NoError(t, os.Chmod(loose, 0o666))
	tests := []struct {
		name, file string
		want       []string
	}{
		{"missing", filepath.Join(dir, "missing.conf"), []string{"cannot be read (no such file or directory); create it, or unset DMLAUNCH_CONFIG"}},
		{"a directory", dir, []string{"is a directory; name the settings file itself"}},
		{"a FIFO", fifo, []string{"is not a regular file"}},
		{"/dev/zero", "/dev/zero", []string{"is not a regular file"}},
		{"oversized", big, []string{"more than the 65536 a settings file may have"}},
		{"writable by others", loose, []string{"has mode 0666, writable by others", "chmod go-w"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			var cfg Config
			var err error
			go func() {
				defer close(done)
				cfg, err = load(t, tt.file, "DMLAUNCH_STATE_DIR=/run/elsewhere")
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("reading the settings file did not return")
			}
			require.Error(t, err)
			require.Len(t, cfg.Problems, 1)
			assert.Equal(t, "DMLAUNCH_CONFIG", cfg.Problems[0].Name)
			assert.Equal(t, "environment", cfg.Problems[0].Origin)
			assert.Contains(t, err.Error(), `DMLAUNCH_CONFIG="`+tt.file+`" (environment) `)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Equal(t, ExitBadInput, ExitCode(err))
			assert.Equal(t, "/run/elsewhere", cfg.StateDir, "the environment's settings still apply")
			assert.Empty(t, cfg.File)
		})
	}
}

// Every problem is found, each bad setting keeps its default, and the good
// ones apply: each launch then refuses only for what concerns it.
func TestConfigKeepsGoodSettingsBesideBadOnes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dmlaunch.conf")
	require.NoError(t, os.WriteFile(file, []byte("DMLAUNCH_LOG_DIR=/var/log/elsewhere\ngarbage\nDMLAUNCH_GDB_LISTEN=0.0.0.0:99\n"), 0o644))
	cfg, err := load(t, file, "DMLAUNCH_STATE_DIR=/run/mine", "DMLAUNCH_DEBUGG=gdb", "DMLAUNCH_QEMU=qemu", "DMLAUNCH_DEBUG=console")
	require.Error(t, err)
	var names []string
	for _, p := range cfg.Problems {
		names = append(names, p.Name)
	}
	assert.ElementsMatch(t, []string{"garbage", "DMLAUNCH_DEBUGG", "DMLAUNCH_QEMU", "DMLAUNCH_GDB_LISTEN"}, names)
	for _, n := range names {
		assert.Contains(t, err.Error(), n)
	}
	assert.NotContains(t, err.Error(), "\n", "one line")
	assert.Equal(t, "/run/mine", cfg.StateDir)
	assert.Equal(t, "/var/log/elsewhere", cfg.LogDir)
	assert.Equal(t, []string{"console"}, cfg.Debug)
	assert.Empty(t, cfg.QEMU, "a bad DMLAUNCH_QEMU leaves the default search")
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:1234"), cfg.GDBListen, "a bad listen address leaves the default")
	assert.Equal(t, file, cfg.File)
}
