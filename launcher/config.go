package launcher

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/atomicfile"
	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"golang.org/x/sys/unix"
)

// DefaultConfigFile is read when DMLAUNCH_CONFIG names no other file, so
// that toolstacks running as daemons can be configured without touching
// their environment.
const DefaultConfigFile = "/etc/dmlaunch/dmlaunch.conf"

// Default directories.
const (
	DefaultStateDir = "/run/dmlaunch"
	DefaultLogDir   = "/var/log/xen"
)

// Setting describes one DMLAUNCH_* name.
type Setting struct {
	Name    string
	Default string
	Help    string
}

// Settings lists every name dmlaunch reads, for validation and for
// "dmctl doctor" and the manual.
var Settings = []Setting{
	{"DMLAUNCH_QEMU", "", "the real QEMU (absolute path); default <own path>.distrib, then the known Xen QEMU paths"},
	{"DMLAUNCH_DEBUG", "off", "gdb, gdb-wait, console (comma list); off = pass-through"},
	{"DMLAUNCH_DEBUG_DOMAINS", "", "domains to debug: domids, names, shell globs (comma list); empty = all"},
	{"DMLAUNCH_GDB_LISTEN", "127.0.0.1:1234", "ADDR:BASEPORT (the port is BASEPORT + domid), or unix: the socket <state dir>/<domid>.gdb"},
	{"DMLAUNCH_GDB_USERS", "", "local users allowed to debug besides root: user names, uids, @group (comma list)"},
	{"DMLAUNCH_GDB_ALLOW", "", "client networks (CIDRs) allowed when ADDR is not loopback"},
	{"DMLAUNCH_GDBSERVER", "gdbserver", "the gdbserver binary"},
	{"DMLAUNCH_DOMID", "", "domid for a launch that carries none; default: allocate a lease"},
	{"DMLAUNCH_STATE_DIR", DefaultStateDir, "leases, registry, sockets"},
	{"DMLAUNCH_LOG_DIR", DefaultLogDir, "console logs"},
	{"DMLAUNCH_CORE_LIMIT", "", "QEMU's core size limit: unlimited, 0 (no cores) or a size such as 512M; unset: unlimited in debug modes, inherited in pass-through"},
	{"DMLAUNCH_DRY_RUN", "0", "1: print every decision and the final argv, exit 0, exec nothing"},
	{"DMLAUNCH_CONFIG", DefaultConfigFile, "the settings file (environment only)"},
}

// Config is every setting, checked.
type Config struct {
	QEMU         string
	Debug        []string // validated modes; empty = pass-through
	DebugDomains []string
	GDBListen    netip.AddrPort // zero when GDBUnix
	GDBUnix      bool           // DMLAUNCH_GDB_LISTEN=unix
	GDBUsers     gdbwrap.Users
	GDBAllow     []netip.Prefix
	GDBServer    string
	Domid        string
	StateDir     string
	LogDir       string
	// CoreLimit is QEMU's RLIMIT_CORE; CoreLimitSet says the setting was
	// given, which pass-through honours too.
	CoreLimit    coredump.Limit
	CoreLimitSet bool
	DryRun       bool
	// File is the settings file that was read, if any.
	File string
	// given holds the values that were set, later ones winning.
	given []givenSetting
}

// givenSetting is one value from the settings file or the environment.
// Every launch reads its settings, so they are a short slice rather than
// maps: a fresh process pays in page faults for each new allocation.
type givenSetting struct{ name, value, origin string }

func (c *Config) lookup(name string) (givenSetting, bool) {
	for i := len(c.given) - 1; i >= 0; i-- {
		if c.given[i].name == name {
			return c.given[i], true
		}
	}
	return givenSetting{}, false
}

// Origin tells where a setting's value came from: "environment", "<file>
// line <n>", or "" for the default.
func (c *Config) Origin(name string) string {
	g, _ := c.lookup(name)
	return g.origin
}

// SettingError is a bad setting: an unknown name or a malformed value.
type SettingError struct {
	Name, Value, Origin, Reason string
}

func (e *SettingError) Error() string {
	if e.Value == "" && e.Reason == "" {
		return fmt.Sprintf("%s (%s)", e.Name, e.Origin)
	}
	return fmt.Sprintf("%s=%q (%s) %s", e.Name, e.Value, e.Origin, e.Reason)
}

func knownSetting(name string) bool {
	for _, s := range Settings {
		if s.Name == name {
			return true
		}
	}
	return false
}

// LoadConfig reads the settings file and the environment (which wins)
// and checks every value.
func LoadConfig(getenv func(string) (string, bool), environ []string) (Config, error) {
	file, explicit := getenv("DMLAUNCH_CONFIG")
	if !explicit {
		file = DefaultConfigFile
	}
	var cfg Config
	if file != "" {
		err := cfg.readFile(file)
		switch {
		case err == nil:
			cfg.File = file
		case !explicit && errors.Is(err, unix.ENOENT):
		default:
			return cfg, err
		}
	}
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "DMLAUNCH_") {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if !knownSetting(k) {
			return cfg, &SettingError{Name: k, Origin: "environment", Reason: "is not a dmlaunch setting; unset it", Value: v}
		}
		if k == "DMLAUNCH_CONFIG" {
			continue
		}
		cfg.given = append(cfg.given, givenSetting{k, v, "environment"})
	}
	return cfg, cfg.apply()
}

func (c *Config) readFile(file string) error {
	data, err := atomicfile.ReadSmall(file)
	if err != nil {
		return err
	}
	for n, rest := 1, string(data); rest != ""; n++ {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := file + " line " + strconv.Itoa(n)
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return &SettingError{Name: line, Origin: where, Reason: "is not a KEY=VALUE line"}
		}
		if !knownSetting(k) || k == "DMLAUNCH_CONFIG" {
			return &SettingError{Name: k, Value: v, Origin: where, Reason: "is not a setting the file may hold"}
		}
		c.given = append(c.given, givenSetting{k, unquote(strings.TrimSpace(v)), where})
	}
	return nil
}

// unquote strips one pair of matching quotes, as a shell-sourced file
// would have them.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

func (c *Config) apply() error {
	bad := func(name, reason string) error {
		g, _ := c.lookup(name)
		return &SettingError{Name: name, Value: g.value, Origin: g.origin, Reason: reason}
	}
	get := func(name string) string {
		if g, ok := c.lookup(name); ok {
			return g.value
		}
		for _, s := range Settings {
			if s.Name == name {
				return s.Default
			}
		}
		return ""
	}

	c.QEMU = get("DMLAUNCH_QEMU")
	if c.QEMU != "" && !filepath.IsAbs(c.QEMU) {
		return bad("DMLAUNCH_QEMU", "must be an absolute path to the real QEMU binary")
	}

	modes, err := checkModes(splitList(get("DMLAUNCH_DEBUG")))
	if err != nil {
		return bad("DMLAUNCH_DEBUG", err.Error())
	}
	c.Debug = modes

	c.DebugDomains = splitList(get("DMLAUNCH_DEBUG_DOMAINS"))
	for _, p := range c.DebugDomains {
		if _, err := path.Match(p, ""); err != nil {
			return bad("DMLAUNCH_DEBUG_DOMAINS", fmt.Sprintf("has a malformed pattern %q", p))
		}
	}

	if err := c.applyGDB(get, bad); err != nil {
		return err
	}

	c.GDBServer = get("DMLAUNCH_GDBSERVER")
	if c.GDBServer == "" || strings.ContainsAny(c.GDBServer, "\x00\n") {
		return bad("DMLAUNCH_GDBSERVER", "must name the gdbserver binary")
	}

	c.Domid = get("DMLAUNCH_DOMID")
	if c.Domid != "" {
		if _, err := domid.Parse(domid.Candidate{Source: domid.FromSetting, Value: c.Domid}); err != nil {
			return bad("DMLAUNCH_DOMID", "is not a domain id (0 to 32751)")
		}
	}

	c.StateDir = get("DMLAUNCH_STATE_DIR")
	if !filepath.IsAbs(c.StateDir) {
		return bad("DMLAUNCH_STATE_DIR", "must be an absolute path")
	}
	c.LogDir = get("DMLAUNCH_LOG_DIR")
	if !filepath.IsAbs(c.LogDir) {
		return bad("DMLAUNCH_LOG_DIR", "must be an absolute path")
	}

	c.CoreLimit = coredump.Limit(coredump.Unlimited)
	if v := get("DMLAUNCH_CORE_LIMIT"); v != "" {
		if c.CoreLimit, err = coredump.ParseLimit(v); err != nil {
			return bad("DMLAUNCH_CORE_LIMIT", err.Error())
		}
		c.CoreLimitSet = true
	}

	switch strings.ToLower(get("DMLAUNCH_DRY_RUN")) {
	case "", "0", "no", "false", "off":
	case "1", "yes", "true", "on":
		c.DryRun = true
	default:
		return bad("DMLAUNCH_DRY_RUN", "must be 1 or 0")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
