// Package launcher turns what the toolstack passed into one decided
// launch: settings, domid, kind, mode, the real QEMU and its final argv;
// then execs it in place, or supervises it in the debug modes.
package launcher

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dmlaunch/dmlaunch/argv"
	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/registry"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
)

// Exit statuses of dmlaunch's own refusals. Supervised launches exit with
// QEMU's status, or 128+signal.
const (
	ExitInternal      = 1
	ExitBadInput      = 2
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// ModePassThrough execs the real QEMU in place.
const ModePassThrough = registry.ModePassThrough

// Plan is one launch, decided but not yet started.
type Plan struct {
	Config Config
	Kind   argv.Kind
	Name   string
	// HasDomid is false for a launch that needs a lease (Domid is then
	// only the allocator's guess) and for the probe, which has none.
	HasDomid bool
	Domid    int
	Source   domid.Source
	Agreeing []domid.Source
	Mode     string
	QEMU     string
	// Argv is the final command line, QEMU's path first; Line is the same
	// without the path, as data, for the debug modes' further rewrites.
	Argv []string
	Line argv.CommandLine
	// PTYSerial is set when the toolstack asked for the first serial port
	// on a QEMU pty (libxl publishes those for xl console).
	PTYSerial bool
	// PIDFile is where a pass-through QEMU started with -daemonize and
	// -pidfile writes the pid of the daemon that runs on once the process
	// dmlaunch exec'd exits (Debian's init script starts dom0's QEMU so);
	// the record keeps it for readers to follow.
	PIDFile string
	Env     []string
	Applied []argv.Applied
	// Notes are decisions worth showing in a dry run.
	Notes []string
	// Backend is set for launches that serve the toolstack or dom0 rather
	// than a guest (the probe, queries, qdisk, anything for domain 0):
	// they pass through whatever the settings and the state directory
	// say, so that a mistake there never stops the host's own services.
	Backend bool
	// Ignored are the settings problems that do not concern this launch:
	// all of them for a backend, which passes through whatever they say;
	// for a guest, those of settings its mode does not use. The launch
	// logs them once, so that the operator hears of them.
	Ignored []*SettingError
	// In a debug mode: the debug port's address, the console log and the
	// launcher's QMP socket, as the supervisor will set them up.
	DebugAddr  string
	ConsoleLog string
	QMPSocket  string
	// Received is the command line as the launcher received it, for
	// reports of internal errors.
	Received []string
	// warnings is the toolstack's log, for repairs of the state
	// directory made on the way (a lease file rebuilt).
	warnings io.Writer
}

// Inputs are what the process was started with.
type Inputs struct {
	Args    []string // os.Args
	Environ []string
	// Self is dmlaunch's own binary, to refuse exec'ing itself; nil skips
	// the check.
	Self *FileID
	// OwnPaths gives the paths dmlaunch was started by, for
	// "<path>.distrib". It is called only when DMLAUNCH_QEMU is not set;
	// nil means none.
	OwnPaths func() []string
	// InheritedFDs are the toolstack's fds beyond 0-2 (supervised mode
	// passes them on at the same numbers; exec keeps them anyway).
	InheritedFDs []int
}

// CurrentInputs describes the running process.
func CurrentInputs() Inputs {
	in := Inputs{Args: os.Args, Environ: os.Environ(), OwnPaths: currentPaths}
	if id, err := IDOf("/proc/self/exe"); err == nil {
		in.Self = &id
	}
	return in
}

func currentPaths() []string {
	var paths []string
	// libxl execs the device model by absolute path; argv[0] keeps the
	// path even where /proc/self/exe resolves a symlink.
	if len(os.Args) > 0 && strings.Contains(os.Args[0], "/") {
		if p, err := filepath.Abs(os.Args[0]); err == nil {
			paths = append(paths, p)
		}
	}
	if exe, err := os.Executable(); err == nil && !slices.Contains(paths, exe) {
		paths = append(paths, exe)
	}
	return paths
}

// EnvLookup is os.LookupEnv over a given environment; the last
// definition of a name wins, as in getenv(3).
func EnvLookup(environ []string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for i := len(environ) - 1; i >= 0; i-- {
			if key, v, ok := strings.Cut(environ[i], "="); ok && key == k {
				return v, true
			}
		}
		return "", false
	}
}

// Prepare decides the launch without changing anything on the machine.
func Prepare(in Inputs) (*Plan, error) {
	getenv := EnvLookup(in.Environ)
	// Settings problems are judged below, once it is known what they
	// would steer: a probe or a backend passes through whatever they say.
	cfg, _ := LoadConfig(getenv, in.Environ)
	p := &Plan{Config: cfg, Mode: ModePassThrough, Env: in.Environ, Received: in.Args}
	var args []string
	if len(in.Args) > 1 {
		args = in.Args[1:]
	}
	cl, err := argv.Parse(args)
	if err != nil {
		return p, err
	}
	p.Kind = cl.Classify()
	p.Name = cl.GuestName()
	p.Backend = !p.Kind.Debuggable() || servesDom0(cl)
	if unknown := cl.Unknown(); len(unknown) > 0 {
		p.Notes = append(p.Notes, "options this QEMU table does not know, passed on as they are: "+strings.Join(unknown, " "))
	}
	switch p.Kind {
	case argv.KindProbe:
		p.Notes = append(p.Notes, "capability probe: no domid, no lease, never debugged")
	case argv.KindQuery:
		p.Notes = append(p.Notes, "a query (-version, -help, a help value): QEMU answers and exits; no lease, no record, never debugged")
	}
	if p.Kind != argv.KindProbe {
		env, _ := getenv("XEN_DOMAIN_ID")
		res, err := domid.Resolve(domid.Inputs{Argv: cl.Values("xen-domid"), Env: env, Leading: cl.LeadingDomid, Setting: cfg.Domid})
		switch {
		case errors.Is(err, domid.ErrNoDomid) && p.Kind.TakesLease():
			p.Source = domid.FromLease
			p.Agreeing = []domid.Source{domid.FromLease}
			p.Domid = -1
			if cfg.StateDirProblem() == nil {
				if d, err := p.allocator().Peek(); err == nil {
					p.Domid = d
				}
			}
		case errors.Is(err, domid.ErrNoDomid):
			p.Domid = -1
		case err != nil:
			return p, err
		default:
			p.HasDomid, p.Domid, p.Source, p.Agreeing = true, res.Domid, res.Source, res.Agreeing
		}
	}

	// Settings problems are checked once the domain is known (to name
	// it), before anything is decided from the settings.
	if p.Backend {
		p.Ignored = cfg.Problems
	} else if err := p.settingsProblems(scopeGuest); err != nil {
		return p, err
	}

	var own []string
	if cfg.QEMU == "" && in.OwnPaths != nil {
		own = in.OwnPaths()
	}
	p.QEMU, err = FindQEMU(cfg.QEMU, own, in.Self)
	if err != nil {
		return p, err
	}

	if len(cfg.Debug) > 0 {
		switch {
		case p.Backend:
			p.Notes = append(p.Notes, fmt.Sprintf("DMLAUNCH_DEBUG=%s ignored: a %s invocation always passes through", strings.Join(cfg.Debug, ","), p.backendKind()))
		case !p.selected():
			p.Notes = append(p.Notes, fmt.Sprintf("DMLAUNCH_DEBUG=%s ignored: DMLAUNCH_DEBUG_DOMAINS does not select this domain", strings.Join(cfg.Debug, ",")))
		default:
			p.Mode = strings.Join(cfg.Debug, ",")
		}
	}
	if !p.Backend {
		if err := p.settingsProblems(scopeGDB); err != nil {
			return p, err
		}
	}

	final, applied, err := argv.ApplyRules(cl, argv.StripLeadingDomid)
	if err != nil {
		return p, err
	}
	p.Applied = applied
	p.Line = final
	p.PTYSerial = cl.WantsPTYSerial()
	p.Argv = append([]string{p.QEMU}, final.Render()...)
	if pf := registry.DaemonPIDFile(final); pf != "" && p.Mode == ModePassThrough {
		if !strings.HasPrefix(pf, "/") {
			// QEMU writes it before daemonizing takes it to /, in the
			// working directory the exec keeps: this one.
			if wd, err := os.Getwd(); err == nil {
				pf = strings.TrimSuffix(wd, "/") + "/" + pf
			} else {
				pf = ""
			}
		}
		if p.PIDFile = pf; pf != "" {
			p.Notes = append(p.Notes, "-daemonize with -pidfile: QEMU runs on as the pid it writes to "+pf+"; the record names that file for dmctl")
		}
	}
	// QEMU and its helpers learn the domid from XEN_DOMAIN_ID when the
	// toolstack did not set it (libxl sets it for HVM since Xen 4.15).
	if p.Kind != argv.KindProbe && p.Kind != argv.KindQuery && p.Domid >= 0 && !slices.Contains(p.Agreeing, domid.FromEnv) {
		p.Env = append(append([]string(nil), in.Environ...), "XEN_DOMAIN_ID="+strconv.Itoa(p.Domid))
	}
	if p.Mode != ModePassThrough {
		if err := p.planDebug(); err != nil {
			return p, err
		}
	}
	return p, nil
}

// servesDom0 reports whether the launch is for domain 0: dom0's own QEMU
// (xencommons starts it through the device-model path), or any backend
// serving dom0. It is never a guest's device model.
func servesDom0(cl argv.CommandLine) bool {
	v, ok := cl.Last("xen-domid")
	if !ok {
		v = cl.LeadingDomid
	}
	return v == "0"
}

// backendKind names what a backend is, for notes: its kind, or "dom0"
// for a domain-0 launch of a guest-like shape.
func (p *Plan) backendKind() string {
	if p.Kind.Debuggable() {
		return "dom0"
	}
	return string(p.Kind)
}

// settingsProblems returns the settings problems that concern this launch
// among those of scopes up to widest: checked first with scopeGuest
// (before anything is decided from the settings), then, once the mode is
// known, with scopeGDB.
func (p *Plan) settingsProblems(widest scope) error {
	var mine []*SettingError
	for _, prob := range p.Config.Problems {
		var concerns bool
		switch sc := settingScope(prob.Name); {
		case sc > widest:
			continue
		case sc == scopeGuest:
			concerns = true
		case sc == scopeDebugConfigured:
			concerns = len(p.Config.Debug) > 0
		case sc == scopeDebugged:
			concerns = p.Mode != ModePassThrough
		case sc == scopeGDB:
			concerns = p.servesDebugPort()
		}
		if concerns {
			mine = append(mine, prob)
		} else if widest == scopeGDB {
			p.Ignored = append(p.Ignored, prob)
		}
	}
	return settingsError(mine)
}

// servesDebugPort reports whether the launch's mode serves a debug port.
func (p *Plan) servesDebugPort() bool {
	return p.Mode != ModePassThrough && p.wants(func(m DebugMode) bool { return m.DebugPort })
}

// debugRules are the rewrites of a debug mode: the first serial port to
// the launcher's pty at ptyPath, and the launcher's QMP socket.
func (p *Plan) debugRules(ptyPath string) []argv.Rule {
	return []argv.Rule{argv.SerialToDevice(ptyPath), argv.AddQMPSocket(QMPSocketPath(p.Config.StateDir, p.Domid))}
}

// planDebug decides what a debug mode will set up, with the checks the
// supervisor makes before it starts anything, so that a dry run shows
// them and fails where the launch would.
func (p *Plan) planDebug() error {
	if p.Domid < 0 {
		// No free domid now: the lease, taken at launch, will say so.
		return nil
	}
	switch {
	case !p.servesDebugPort():
	case p.Config.GDBUnix:
		p.DebugAddr = gdbwrap.UnixTarget(gdbwrap.UnixSocketPath(p.Config.StateDir, p.Domid))
	default:
		addr, err := gdbwrap.Address(p.Config.GDBListen, p.Domid)
		if err != nil {
			return err
		}
		p.DebugAddr = addr.String()
	}
	p.ConsoleLog = ConsoleLogPath(p.Config.LogDir, p.Domid)
	p.QMPSocket = QMPSocketPath(p.Config.StateDir, p.Domid)
	return nil
}

// selected applies DMLAUNCH_DEBUG_DOMAINS: domids, names or shell globs.
func (p *Plan) selected() bool {
	if len(p.Config.DebugDomains) == 0 {
		return true
	}
	id := strconv.Itoa(p.Domid)
	for _, pat := range p.Config.DebugDomains {
		if m, _ := path.Match(pat, id); m && p.Domid >= 0 {
			return true
		}
		if m, _ := path.Match(pat, p.Name); m && p.Name != "" {
			return true
		}
	}
	return false
}

func (p *Plan) allocator() *domid.Allocator {
	a := NewAllocator(p.Config.StateDir, EnvLookup(p.Env))
	if p.warnings != nil {
		a.Warn = func(msg string) {
			fmt.Fprintf(p.warnings, "dmlaunch: %s%s\n", p.subjectPrefix(), shellquote.Visible(msg))
		}
	}
	return a
}

// NewAllocator is the lease allocator of a state directory, with libxl's
// LIBXL_DOMID_REUSE_TIMEOUT from the environment given (a malformed value
// leaves libxl's default, as libxl does).
func NewAllocator(stateDir string, getenv func(string) (string, bool)) *domid.Allocator {
	a := domid.NewAllocator(stateDir)
	v, _ := getenv("LIBXL_DOMID_REUSE_TIMEOUT")
	if t, err := domid.ReuseTimeoutFromEnv(v); err == nil {
		a.ReuseTimeout = t
	}
	return a
}

// Subject names the domain in messages: "domain 5 (hvm1)".
func (p *Plan) Subject() string {
	if p == nil {
		return ""
	}
	// The name is the guest's choice: nothing in it may break the line
	// (escaped as the console log's header has it).
	name := shellquote.Visible(p.Name)
	if name == "" {
		name = "-"
	}
	switch {
	case p.Kind == argv.KindProbe:
		return "capability probe"
	case p.HasDomid || p.Domid >= 0 && p.Source == domid.FromLease:
		return "domain " + strconv.Itoa(p.Domid) + " (" + name + ")"
	case p.Name != "":
		return "domain ? (" + name + ")"
	case p.Kind == argv.KindQuery:
		return "query"
	}
	return ""
}

// Describe prints every decision and the final argv, one word per line.
// In a debug mode the argv is the one the supervisor will run, with the
// pty it will open shown as /dev/pts/N.
func (p *Plan) Describe(w io.Writer) {
	switch {
	case p.Kind == argv.KindProbe:
		fmt.Fprintln(w, "domid:   none (capability probe)")
	case p.Source == domid.FromLease && p.Domid >= 0:
		fmt.Fprintf(w, "domid:   %d (none given: a lease would be allocated; this is the next free domid)\n", p.Domid)
	case p.Source == domid.FromLease:
		fmt.Fprintln(w, "domid:   none given: a lease would be allocated")
	case p.HasDomid:
		var srcs []string
		for _, s := range p.Agreeing {
			srcs = append(srcs, string(s))
		}
		fmt.Fprintf(w, "domid:   %d (from %s)\n", p.Domid, strings.Join(srcs, ", "))
	default:
		fmt.Fprintln(w, "domid:   none")
	}
	fmt.Fprintf(w, "kind:    %s\n", p.Kind)
	if p.Name != "" {
		fmt.Fprintf(w, "name:    %s\n", shellquote.Word(p.Name))
	}
	fmt.Fprintf(w, "mode:    %s\n", p.Mode)
	fmt.Fprintf(w, "qemu:    %s\n", shellquote.Word(p.QEMU))
	if p.Config.File != "" {
		fmt.Fprintf(w, "config:  %s\n", shellquote.Word(p.Config.File))
	}
	if len(p.Ignored) > 0 {
		fmt.Fprintf(w, "ignored: %s (%s)\n", shellquote.Visible(settingsError(p.Ignored).Error()), p.whyIgnored())
	}
	finalArgv, applied := p.Argv, p.Applied
	if p.Mode != ModePassThrough {
		if p.DebugAddr != "" {
			fmt.Fprintf(w, "gdb:     target remote %s\n", shellquote.Word(p.DebugAddr))
		}
		if p.ConsoleLog != "" {
			fmt.Fprintf(w, "console: a new pty for the guest's first serial port; every byte kept in %s\n", shellquote.Word(p.ConsoleLog))
			fmt.Fprintf(w, "qmp:     %s\n", shellquote.Word(p.QMPSocket))
			if cl, more, err := argv.ApplyRules(p.Line, p.debugRules("/dev/pts/N")...); err == nil {
				finalArgv = append([]string{p.QEMU}, cl.Render()...)
				applied = append(slices.Clip(applied), more...)
			}
		}
	}
	for _, a := range applied {
		fmt.Fprintf(w, "rewrite: %s (%s)\n", a.Rule, a.Why)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note:    %s\n", shellquote.Visible(n))
	}
	fmt.Fprintln(w, "argv:")
	for _, a := range finalArgv {
		fmt.Fprintf(w, "  %s\n", shellquote.Word(a))
	}
}

// LogLine is the one line a launch writes to the toolstack's log.
func (p *Plan) LogLine() string {
	src := ""
	if p.Source != "" {
		src = ", domid from " + string(p.Source)
	}
	return "dmlaunch: " + p.Subject() + ": " + string(p.Kind) + src + ", " + p.Mode + ": " + shellquote.Join(p.Argv)
}

// subjectPrefix is "domain 5 (hvm1): ", or "" when there is no subject.
func (p *Plan) subjectPrefix() string {
	if s := p.Subject(); s != "" {
		return s + ": "
	}
	return ""
}

// DirError is a state or log directory that dmlaunch cannot use: full,
// read-only, under a file, not ours to write. The operator chose the
// directory, so the operator can fix it.
type DirError struct {
	// What is "state directory" or "console log directory"; Setting
	// the setting that chooses it.
	What, Setting, Dir string
	Err                error
}

func (e *DirError) Error() string {
	return fmt.Sprintf("%s %s cannot be used: %v", e.What, e.Dir, e.Err)
}

func (e *DirError) Unwrap() error { return e.Err }

// Hint says what to do, by what the system said.
func (e *DirError) Hint() string {
	other := "or set " + e.Setting + " to another directory"
	switch {
	case errors.Is(e.Err, syscall.ENOSPC), errors.Is(e.Err, syscall.EDQUOT):
		return "its file system is full: free space there (df " + e.Dir + "), " + other
	case errors.Is(e.Err, syscall.EROFS):
		return "its file system is read-only: remount it read-write, " + other
	case errors.Is(e.Err, syscall.ENOTDIR), errors.Is(e.Err, syscall.EEXIST):
		return "something in its path is not a directory: move it aside, " + other
	case errors.Is(e.Err, syscall.EACCES), errors.Is(e.Err, syscall.EPERM):
		return fmt.Sprintf("dmlaunch runs as uid %d and may not write there: fix its owner or mode, %s", os.Geteuid(), other)
	case errors.Is(e.Err, syscall.ELOOP):
		return "a symbolic link loops in its path: fix the link, " + other
	}
	return "fix the directory, " + other
}

// dirOf tells whether err is about the state or log directory (a file
// operation on it, inside it, or on a directory above it), as a DirError.
func (p *Plan) dirOf(err error) (*DirError, bool) {
	var paths []string
	var pe *os.PathError
	if errors.As(err, &pe) {
		paths = append(paths, pe.Path)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		paths = append(paths, le.Old, le.New)
	}
	var errno syscall.Errno
	if len(paths) == 0 || !errors.As(err, &errno) {
		return nil, false
	}
	for _, d := range []struct{ what, setting, dir string }{
		{"state directory", "DMLAUNCH_STATE_DIR", p.Config.StateDir},
		{"console log directory", "DMLAUNCH_LOG_DIR", p.Config.LogDir},
	} {
		for _, path := range paths {
			if d.dir != "" && related(filepath.Clean(path), d.dir) {
				return &DirError{What: d.what, Setting: d.setting, Dir: d.dir, Err: err}, true
			}
		}
	}
	return nil, false
}

// related reports whether path is dir, inside it, or one of its parents.
func related(path, dir string) bool {
	inside := func(a, b string) bool { return a == b || strings.HasPrefix(a, b+"/") || b == "/" }
	return inside(path, dir) || inside(dir, path)
}

// CommandLineTooLongError is an exec the kernel refused with E2BIG: the
// command line and environment together are more than it takes.
type CommandLineTooLongError struct {
	Words, ArgBytes, EnvBytes, Longest int
}

func (e *CommandLineTooLongError) Error() string {
	return fmt.Sprintf("the command line is too long for the kernel: %d words of %d bytes (the longest %d) and %d bytes of environment "+
		"(the limit is a quarter of the stack limit, ulimit -s, and %d bytes for one word)", e.Words, e.ArgBytes, e.Longest, e.EnvBytes, maxArgStrlen)
}

// maxArgStrlen is Linux's MAX_ARG_STRLEN: 32 pages.
const maxArgStrlen = 32 * 4096

// execFailed says why exec'ing or starting QEMU failed: a command line
// the kernel will not take is the toolstack's input, not QEMU's fault.
func (p *Plan) execFailed(what string, err error) error {
	if errors.Is(err, syscall.E2BIG) {
		e := &CommandLineTooLongError{Words: len(p.Argv)}
		for _, a := range p.Argv {
			e.ArgBytes += len(a) + 1
			e.Longest = max(e.Longest, len(a))
		}
		for _, kv := range p.Env {
			e.EnvBytes += len(kv) + 1
			e.Longest = max(e.Longest, len(kv))
		}
		return e
	}
	return &NotExecutableError{p.QEMU, what + ": " + err.Error()}
}

// outcome is what dmlaunch does about one kind of error: the exit status
// and what to tell the operator to do.
type outcome struct {
	matches func(error) bool
	status  int
	hint    string
}

func as[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

// Plain functions rather than closures over their targets, which would
// be allocated at every start to build the table below.
func isUnsafeStateDir(err error) bool { return errors.Is(err, statedir.ErrUnsafe) }
func isExhausted(err error) bool      { return errors.Is(err, domid.ErrExhausted) }

// outcomes are tried in order; the first match decides. The exit status
// table (dmlaunch(8)): 2 for bad input of any kind, from the command line,
// the environment, the settings, or the directories the operator chose;
// 126 and 127 for the real QEMU; 1 for dmlaunch's own faults only.
var outcomes = []outcome{
	{as[*gdbwrap.PortBusyError], ExitBadInput, "the domain was not started"},
	{as[*gdbwrap.PortRangeError], ExitBadInput, "lower the base port in DMLAUNCH_GDB_LISTEN"},
	{as[*SettingError], ExitBadInput, "dmlaunch(8) lists every setting"},
	{as[*argv.MissingValueError], ExitBadInput, "check device_model_args in the domain's configuration"},
	{as[*CommandLineTooLongError], ExitBadInput, "shorten device_model_args in the domain's configuration, or the toolstack's environment"},
	{as[*domid.InvalidError], ExitBadInput, "the toolstack's -xen-domid, XEN_DOMAIN_ID and DMLAUNCH_DOMID must name one domain"},
	{as[*domid.ConflictError], ExitBadInput, "the toolstack's -xen-domid, XEN_DOMAIN_ID and DMLAUNCH_DOMID must name one domain"},
	{as[*domid.HeldError], ExitBadInput, "a domain's device model runs once; see dmctl list, and stop the old one first"},
	{isUnsafeStateDir, ExitBadInput, "fix the directory or set DMLAUNCH_STATE_DIR"},
	{as[*DirError], ExitBadInput, ""}, // its own Hint
	{isExhausted, ExitBadInput, "release leases with dmctl domid release, or wait for freed domids to cool down"},
	{as[*ToolMissingError], ExitBadInput, ""}, // its own Hint
	{as[*NotFoundError], ExitNotFound, "install qemu-system-xen, or set DMLAUNCH_QEMU to the real QEMU"},
	{as[*NotExecutableError], ExitNotExecutable, "set DMLAUNCH_QEMU to the real QEMU binary, or reinstall with scripts/install.sh"},
}

// internalHint ends the report of an error dmlaunch did not expect.
const internalHint = "this is an internal error in dmlaunch; please report it with this line"

func classify(err error) outcome {
	for _, o := range outcomes {
		if o.matches(err) {
			if o.hint == "" {
				var de *DirError
				var te *ToolMissingError
				switch {
				case errors.As(err, &de):
					o.hint = de.Hint()
				case errors.As(err, &te):
					o.hint = te.Hint()
				}
			}
			return o
		}
	}
	return outcome{status: ExitInternal, hint: internalHint}
}

// Hint says what to do about an error from Prepare, Launch or Supervise.
func Hint(err error) string { return classify(err).hint }

// ExitCode maps an error to dmlaunch's exit status.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	return classify(err).status
}

// Explain turns an error about the state or log directory into a DirError,
// which says what to do, and leaves every other error as it is.
func (p *Plan) Explain(err error) error {
	if err == nil || p == nil || classify(err).status != ExitInternal {
		return err
	}
	if de, ok := p.dirOf(err); ok {
		return de
	}
	return err
}

// Report writes "dmlaunch: domain 5 (hvm1): <what happened>; <what to do>",
// on one line whatever the error holds.
func Report(w io.Writer, p *Plan, err error) {
	err = p.Explain(err)
	o := classify(err)
	line := "dmlaunch: " + p.subjectPrefix() + shellquote.Visible(err.Error()) + "; " + o.hint
	if o.status == ExitInternal && p != nil && len(p.Received) > 0 {
		line += ": " + shellquote.Join(p.Received)
	}
	io.WriteString(w, line+"\n")
}

// whyIgnored says why the Ignored problems do not stop the launch.
func (p *Plan) whyIgnored() string {
	if p.Backend {
		return "a " + p.backendKind() + " always passes through"
	}
	return "not used by a " + p.Mode + " launch"
}

// logIgnored writes, on one line, the settings problems the launch goes
// on despite.
func (p *Plan) logIgnored(w io.Writer) {
	if len(p.Ignored) == 0 {
		return
	}
	io.WriteString(w, "dmlaunch: "+p.subjectPrefix()+p.whyIgnored()+"; settings ignored: "+
		shellquote.Visible(settingsError(p.Ignored).Error())+"; dmlaunch(8) lists every setting\n")
}

// recorded reports whether the launch gets a registry record: every
// launch for a domain, but not a query, which runs nothing.
func (p *Plan) recorded() bool {
	return p.HasDomid && p.Kind != argv.KindQuery
}

// Launch takes the lease, writes the registry record, logs the launch and
// execs the real QEMU in place. It returns only on failure. A backend
// passes through even when the state directory cannot be used, saying so.
func (p *Plan) Launch(stderr io.Writer) error {
	self, err := proc.Self()
	if err != nil {
		return err
	}
	var lease *domid.Lease
	var rec *registry.Record
	if p.Kind.TakesLease() && !p.Backend {
		// The record is written under the lease lock, before the lease
		// is saved: a lease file rebuilt from the registry never misses
		// this launch.
		l, err := p.acquire(self, func(l domid.Lease) error {
			r := registry.Record{
				Domid: l.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
				Launcher: self, QEMUPID: self.PID, QEMU: p.QEMU, Argv: p.Argv, Started: time.Now().UTC(),
				PIDFile: p.PIDFile,
			}
			if err := p.writeRecord(r, true); err != nil {
				return err
			}
			rec = &r
			return nil
		})
		if err != nil {
			return p.undo(nil, rec, p.Explain(err))
		}
		lease = &l
	}
	switch prob := p.Config.StateDirProblem(); {
	case lease != nil: // recorded under the lease lock
	case prob != nil && p.recorded():
		// Only a backend gets here (the problem refuses the others).
		io.WriteString(stderr, "dmlaunch: "+p.subjectPrefix()+"no registry record, passing through anyway: "+prob.Name+" is unusable (above), so the state directory is unknown\n")
	case p.recorded():
		r := registry.Record{
			Domid: p.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
			Launcher: self, QEMUPID: self.PID, QEMU: p.QEMU, Argv: p.Argv, Started: time.Now().UTC(),
			PIDFile: p.PIDFile,
		}
		err := p.writeRecord(r, lease != nil)
		switch {
		case err == nil:
			rec = &r
		case p.Backend:
			io.WriteString(stderr, "dmlaunch: "+p.subjectPrefix()+"no registry record, passing through anyway: "+
				shellquote.Visible(p.Explain(err).Error())+"; "+Hint(p.Explain(err))+"\n")
		default:
			return p.undo(lease, nil, p.Explain(err))
		}
	}
	io.WriteString(stderr, p.LogLine()+"\n")
	if p.Config.CoreLimitSet {
		// The exec'd QEMU keeps this process's limits; a limit that
		// cannot be raised as far as asked is said, never fatal.
		if _, err := p.Config.CoreLimit.Apply(); err != nil {
			fmt.Fprintf(stderr, "dmlaunch: %s: %v\n", p.Subject(), err)
		}
	}
	err = syscall.Exec(p.QEMU, p.Argv, p.Env)
	// Still here: the exec failed and nothing runs under this domid.
	return p.undo(lease, rec, p.execFailed("could not be executed", err))
}

// sweepEnded removes the records of pass-through launches that have
// ended: their QEMU exited (xl destroy), and nothing of dmlaunch was left
// to remove them. A supervised launch calls it under the lease lock,
// before it writes its own record (of domid d), so that after a destroy
// the next debug-mode launch of any domain leaves no ended record behind.
// A pass-through launch leaves it to the lease allocator's full reap, at
// most every 10 s (domid.Allocator): it reads every record and its
// launcher's /proc stat, about 20 us a record, which with tens of running
// domains would cost each pass-through launch a tenth or more of its time.
func (p *Plan) sweepEnded(d int) {
	registry.SweepEnded(p.Config.StateDir, registry.FileName(d, string(p.Kind)))
}

// writeRecord writes the launch's registry record; Acquire made and
// checked the state directory when there is a lease.
func (p *Plan) writeRecord(r registry.Record, haveLease bool) error {
	if !haveLease {
		if err := statedir.Ensure(p.Config.StateDir); err != nil {
			return p.stateDirError(err)
		}
	}
	_, err := registry.Write(p.Config.StateDir, r)
	return p.stateDirError(err)
}

// acquire records the launch's hold on its domid, or allocates one for a
// launch that carries none; holder's death ends it. commit runs under the
// lease lock once the domid is known (see domid.Request.Commit).
func (p *Plan) acquire(holder proc.Identity, commit func(domid.Lease) error) (domid.Lease, error) {
	req := domid.Request{Domid: -1, Kind: string(p.Kind), Name: p.Name, Holder: holder, Commit: commit}
	if p.HasDomid {
		req.Domid = p.Domid
	}
	l, err := p.allocator().Acquire(req)
	if err == nil && !p.HasDomid {
		p.setLeasedDomid(l.Domid)
	}
	return l, p.stateDirError(err)
}

// stateDirError makes a system call's failure in the state directory a
// DirError, which says what to do about it; other errors stay as they are.
func (p *Plan) stateDirError(err error) error {
	var errno syscall.Errno
	if err == nil || !errors.As(err, &errno) || classify(err).status != ExitInternal {
		return err
	}
	return &DirError{What: "state directory", Setting: "DMLAUNCH_STATE_DIR", Dir: p.Config.StateDir, Err: err}
}

// setLeasedDomid fills in a domid that came from the allocator.
func (p *Plan) setLeasedDomid(d int) {
	p.Domid, p.HasDomid = d, true
	for i, kv := range p.Env {
		if strings.HasPrefix(kv, "XEN_DOMAIN_ID=") {
			p.Env[i] = "XEN_DOMAIN_ID=" + strconv.Itoa(d)
			return
		}
	}
	p.Env = append(append([]string(nil), p.Env...), "XEN_DOMAIN_ID="+strconv.Itoa(d))
}

func (p *Plan) undo(lease *domid.Lease, rec *registry.Record, err error) error {
	if rec != nil {
		_ = registry.Remove(p.Config.StateDir, *rec)
	}
	if lease != nil {
		_ = p.allocator().Release(lease.Domid, lease.Holder)
	}
	return err
}

// Main is dmlaunch's entry point.
func Main(in Inputs, stdout io.Writer, stderr *os.File) int {
	p, err := Prepare(in)
	if err == nil && p.Config.DryRun {
		err = p.DryRunChecks()
	}
	if err != nil {
		Report(stderr, p, err)
		return ExitCode(p.Explain(err))
	}
	if p.Config.DryRun {
		p.Describe(stdout)
		return 0
	}
	p.logIgnored(stderr)
	p.warnings = stderr
	if p.Mode != ModePassThrough {
		if in.InheritedFDs == nil {
			in.InheritedFDs = InheritedFDs()
		}
		status, err := p.Supervise(in, stderr)
		if err != nil {
			Report(stderr, p, err)
			return ExitCode(p.Explain(err))
		}
		return status
	}
	err = p.Launch(stderr)
	Report(stderr, p, err)
	return ExitCode(p.Explain(err))
}
