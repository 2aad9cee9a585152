package launcher

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
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
	{"DMLAUNCH_DEBUG", "off", "gdb, gdb-wait, console, strace, memcheck (comma list); off = pass-through"},
	{"DMLAUNCH_DEBUG_DOMAINS", "", "domains to debug: domids, names, shell globs (comma list); empty = all"},
	{"DMLAUNCH_GDB_LISTEN", "127.0.0.1:1234", "ADDR:BASEPORT (the port is BASEPORT + domid), or unix: the socket <state dir>/<domid>.gdb"},
	{"DMLAUNCH_GDB_USERS", "", "local users allowed to debug besides root: user names, uids, @group (comma list)"},
	{"DMLAUNCH_GDB_ALLOW", "", "client networks (CIDRs) allowed when ADDR is not loopback"},
	{"DMLAUNCH_GDBSERVER", "gdbserver", "the gdbserver binary"},
	{"DMLAUNCH_DOMID", "", "domid for a launch that carries none; default: allocate a lease"},
	{"DMLAUNCH_STATE_DIR", DefaultStateDir, "leases, registry, sockets"},
	{"DMLAUNCH_LOG_DIR", DefaultLogDir, "console logs"},
	{"DMLAUNCH_CORE_LIMIT", "", "QEMU's core size limit: unlimited, 0 (no cores) or a size such as 512M; unset: unlimited in debug modes, inherited in pass-through"},
	{"DMLAUNCH_VGDB_ERROR", "", "memcheck: stop QEMU for a debugger after this many errors (valgrind's --vgdb-error; 0 = before its first instruction); empty = never"},
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
	// VgdbError is valgrind's --vgdb-error in memcheck mode; -1 leaves
	// valgrind's default (never stop).
	VgdbError int
	DryRun    bool
	// File is the settings file that was read, if any.
	File string
	// Problems are the settings that could not be used, each left at its
	// default; LoadConfig's error joins them.
	Problems []*SettingError
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

// StateDirProblem is the settings problem that leaves the state directory
// unknown, if any: DMLAUNCH_STATE_DIR itself is bad, or the settings file
// that may name it could not be read. StateDir is then only the default,
// which nothing may write to in the operator's stead.
func (c *Config) StateDirProblem() *SettingError {
	for _, p := range c.Problems {
		switch {
		case p.Name == "DMLAUNCH_STATE_DIR",
			p.Name == "DMLAUNCH_CONFIG" && c.Origin("DMLAUNCH_STATE_DIR") != "environment":
			return p
		}
	}
	return nil
}

// Origin tells where a setting's value came from: "environment", "<file>
// line <n>", or "" for the default.
func (c *Config) Origin(name string) string {
	g, _ := c.lookup(name)
	return g.origin
}

// SettingError is a bad setting: an unknown name, a malformed value, or a
// settings file that cannot be used.
type SettingError struct {
	Name, Value, Origin, Reason string
}

func (e *SettingError) Error() string {
	if e.Value == "" && e.Reason == "" {
		return fmt.Sprintf("%s (%s)", e.Name, e.Origin)
	}
	return fmt.Sprintf("%s=%q (%s) %s", e.Name, e.Value, e.Origin, e.Reason)
}

// SettingsError is every settings problem that stops one launch.
type SettingsError struct{ Problems []*SettingError }

func (e *SettingsError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; and ")
}

// Unwrap gives errors.As each problem.
func (e *SettingsError) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

// settingsError is nil for no problems, so that it can be returned as an
// error without becoming a non-nil interface.
func settingsError(problems []*SettingError) error {
	if len(problems) == 0 {
		return nil
	}
	return &SettingsError{problems}
}

// A scope says which launches a setting steers: a problem with a setting
// stops only those (see Plan.settingsProblems).
type scope int

const (
	// scopeGuest: every launch of a guest's device model. Unknown names
	// and unreadable files are here too: what they meant is unknown.
	scopeGuest scope = iota
	// scopeDebugConfigured: guest launches while DMLAUNCH_DEBUG asks for a
	// debug mode (whether the domain is selected depends on the setting).
	scopeDebugConfigured
	// scopeDebugged: launches that run in a debug mode.
	scopeDebugged
	// scopeGDB: launches whose mode serves a debug port.
	scopeGDB
)

func settingScope(name string) scope {
	switch {
	case !knownSetting(name):
		return scopeGuest
	case name == "DMLAUNCH_DEBUG_DOMAINS":
		return scopeDebugConfigured
	case name == "DMLAUNCH_LOG_DIR":
		return scopeDebugged
	case strings.HasPrefix(name, "DMLAUNCH_GDB"):
		return scopeGDB
	}
	return scopeGuest
}

func knownSetting(name string) bool {
	for _, s := range Settings {
		if s.Name == name {
			return true
		}
	}
	return false
}

// MaxConfigSize is the largest settings file read. A commented file with
// every setting is a few KiB; anything much larger is not a settings file.
const MaxConfigSize = 64 << 10

// LoadConfig reads the settings file and the environment (which wins)
// and checks every value. A bad setting keeps its default and is listed
// in Problems; the error joins them all (a *SettingsError). Each launch
// decides which problems concern it: the probe, queries and backends pass
// through whatever the settings say.
func LoadConfig(getenv func(string) (string, bool), environ []string) (Config, error) {
	file, explicit := getenv("DMLAUNCH_CONFIG")
	origin := "environment"
	if !explicit {
		file, origin = DefaultConfigFile, "default"
	}
	var cfg Config
	if file != "" {
		err := cfg.readFile(file)
		var se *SettingError
		switch {
		case err == nil:
			cfg.File = file
		case !explicit && errors.Is(err, unix.ENOENT):
		case errors.As(err, &se):
			se.Origin = origin
			cfg.Problems = append(cfg.Problems, se)
		default:
			cfg.Problems = append(cfg.Problems, configFileProblem(file, origin, err))
		}
	}
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "DMLAUNCH_") {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if !knownSetting(k) {
			cfg.Problems = append(cfg.Problems, &SettingError{Name: k, Origin: "environment", Reason: "is not a dmlaunch setting; unset it", Value: v})
			continue
		}
		if k == "DMLAUNCH_CONFIG" {
			continue
		}
		cfg.given = append(cfg.given, givenSetting{k, v, "environment"})
	}
	cfg.apply()
	return cfg, settingsError(cfg.Problems)
}

// configFileProblem says what is wrong with a settings file that could
// not be read, and what to do.
func configFileProblem(file, origin string, err error) *SettingError {
	reason := "cannot be read (" + errnoText(err) + ")"
	switch {
	case errors.Is(err, unix.ENOENT):
		reason += "; create it, or unset DMLAUNCH_CONFIG"
	case errors.Is(err, unix.EACCES):
		reason += fmt.Sprintf("; dmlaunch runs as uid %d: make the file readable to it", unix.Geteuid())
	default:
		reason += "; fix the file, or point DMLAUNCH_CONFIG at another one"
	}
	return &SettingError{Name: "DMLAUNCH_CONFIG", Value: file, Origin: origin, Reason: reason}
}

// errnoText is the system's words for the errno inside err, without the
// path and operation that os errors add.
func errnoText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// readFile reads the settings file: a regular file only (a FIFO would
// block forever, a device like /dev/zero never ends), at most
// MaxConfigSize bytes, owned by root or by dmlaunch's own user and not
// writable by others (it names the binary that runs as root).
func (c *Config) readFile(file string) error {
	data, err := readConfigFile(file)
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
			c.Problems = append(c.Problems, &SettingError{Name: line, Origin: where, Reason: "is not a KEY=VALUE line"})
			continue
		}
		if !knownSetting(k) || k == "DMLAUNCH_CONFIG" {
			c.Problems = append(c.Problems, &SettingError{Name: k, Value: v, Origin: where, Reason: "is not a setting the file may hold"})
			continue
		}
		c.given = append(c.given, givenSetting{k, unquote(strings.TrimSpace(v)), where})
	}
	return nil
}

func readConfigFile(file string) ([]byte, error) {
	bad := func(reason string) error {
		return &SettingError{Name: "DMLAUNCH_CONFIG", Value: file, Origin: "", Reason: reason}
	}
	// O_NONBLOCK: opening a FIFO for reading would wait for a writer.
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: file, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: file, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil, bad("is a directory; name the settings file itself")
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, bad("is not a regular file (a FIFO, socket or device); name a plain file")
	case st.Size > MaxConfigSize:
		return nil, bad(fmt.Sprintf("is %d bytes, more than the %d a settings file may have; name the right file", st.Size, MaxConfigSize))
	case st.Uid != 0 && int(st.Uid) != unix.Geteuid():
		return nil, bad(fmt.Sprintf("is owned by uid %d: it names the programs dmlaunch runs, so it must belong to root; chown root it", st.Uid))
	case st.Mode&0o022 != 0:
		return nil, bad(fmt.Sprintf("has mode %04o, writable by others: it names the programs dmlaunch runs; chmod go-w it", st.Mode&0o7777))
	}
	// Bounded even if the file grows while it is read.
	buf, err := atomicfile.ReadFD(fd, MaxConfigSize)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: file, Err: err}
	}
	if len(buf) > MaxConfigSize {
		return nil, bad(fmt.Sprintf("is more than the %d bytes a settings file may have; name the right file", MaxConfigSize))
	}
	return buf, nil
}

// unquote strips one pair of matching quotes, as a shell-sourced file
// would have them.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// settingsGroup checks the settings of one group and fills in their
// fields, or returns the group's first problem; the fields then keep
// their defaults and the other groups still apply.
type settingsGroup func(get func(string) string, bad func(name, reason string) error) error

func (c *Config) apply() {
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
	// Defaults first: a group with a problem leaves them.
	c.StateDir, c.LogDir = DefaultStateDir, DefaultLogDir
	c.GDBListen = netip.MustParseAddrPort("127.0.0.1:1234")
	c.GDBServer = "gdbserver"
	c.CoreLimit = coredump.Limit(coredump.Unlimited)
	c.VgdbError = -1
	groups := []settingsGroup{c.applyQEMU, c.applyDebug, c.applyGDB, c.applyGDBServer, c.applyDomid,
		c.applyStateDir, c.applyLogDir, c.applyCoreLimit, c.applyVgdbError, c.applyDryRun}
	for _, group := range groups {
		before := *c
		if err := group(get, bad); err != nil {
			*c = before // nothing of a group with a problem is used
			c.Problems = append(c.Problems, err.(*SettingError))
		}
	}
	for _, p := range c.Problems {
		if p.Origin == "" {
			p.Origin = c.Origin(p.Name)
			if p.Origin == "" {
				p.Origin = "default"
			}
		}
	}
}

func (c *Config) applyQEMU(get func(string) string, bad func(name, reason string) error) error {
	qemu := get("DMLAUNCH_QEMU")
	if qemu != "" && !filepath.IsAbs(qemu) {
		return bad("DMLAUNCH_QEMU", "must be an absolute path to the real QEMU binary")
	}
	c.QEMU = qemu
	return nil
}

func (c *Config) applyDebug(get func(string) string, bad func(name, reason string) error) error {
	modes, err := checkModes(splitList(get("DMLAUNCH_DEBUG")))
	if err != nil {
		return bad("DMLAUNCH_DEBUG", err.Error())
	}
	c.Debug = modes

	domains := splitList(get("DMLAUNCH_DEBUG_DOMAINS"))
	for _, p := range domains {
		if _, err := path.Match(p, ""); err != nil {
			return bad("DMLAUNCH_DEBUG_DOMAINS", fmt.Sprintf("has a malformed pattern %q", p))
		}
	}
	c.DebugDomains = domains
	return nil
}

func (c *Config) applyGDBServer(get func(string) string, bad func(name, reason string) error) error {
	c.GDBServer = get("DMLAUNCH_GDBSERVER")
	if c.GDBServer == "" || strings.ContainsAny(c.GDBServer, "\x00\n") {
		return bad("DMLAUNCH_GDBSERVER", "must name the gdbserver binary")
	}
	return nil
}

func (c *Config) applyDomid(get func(string) string, bad func(name, reason string) error) error {
	d := get("DMLAUNCH_DOMID")
	if d != "" {
		if _, err := domid.Parse(domid.Candidate{Source: domid.FromSetting, Value: d}); err != nil {
			return bad("DMLAUNCH_DOMID", "is not a domain id (0 to 32751)")
		}
	}
	c.Domid = d
	return nil
}

func (c *Config) applyStateDir(get func(string) string, bad func(name, reason string) error) error {
	d := get("DMLAUNCH_STATE_DIR")
	if !filepath.IsAbs(d) {
		return bad("DMLAUNCH_STATE_DIR", "must be an absolute path")
	}
	c.StateDir = filepath.Clean(d)
	return nil
}

func (c *Config) applyLogDir(get func(string) string, bad func(name, reason string) error) error {
	d := get("DMLAUNCH_LOG_DIR")
	if !filepath.IsAbs(d) {
		return bad("DMLAUNCH_LOG_DIR", "must be an absolute path")
	}
	c.LogDir = filepath.Clean(d)
	return nil
}

func (c *Config) applyCoreLimit(get func(string) string, bad func(name, reason string) error) error {
	if v := get("DMLAUNCH_CORE_LIMIT"); v != "" {
		limit, err := coredump.ParseLimit(v)
		if err != nil {
			return bad("DMLAUNCH_CORE_LIMIT", err.Error())
		}
		c.CoreLimit, c.CoreLimitSet = limit, true
	}
	return nil
}

func (c *Config) applyDryRun(get func(string) string, bad func(name, reason string) error) error {
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
