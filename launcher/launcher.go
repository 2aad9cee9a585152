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
const ModePassThrough = "pass-through"

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
	Env       []string
	Applied   []argv.Applied
	// Notes are decisions worth showing in a dry run.
	Notes []string
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
	cfg, err := LoadConfig(getenv, in.Environ)
	if err != nil {
		return &Plan{Config: cfg}, err
	}
	p := &Plan{Config: cfg, Mode: ModePassThrough, Env: in.Environ}
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
	if unknown := cl.Unknown(); len(unknown) > 0 {
		p.Notes = append(p.Notes, "options this QEMU table does not know, passed on as they are: "+strings.Join(unknown, " "))
	}

	if p.Kind == argv.KindProbe {
		p.Notes = append(p.Notes, "capability probe: no domid, no lease, never debugged")
	} else {
		env, _ := getenv("XEN_DOMAIN_ID")
		res, err := domid.Resolve(domid.Inputs{Argv: cl.Values("xen-domid"), Env: env, Leading: cl.LeadingDomid, Setting: cfg.Domid})
		switch {
		case errors.Is(err, domid.ErrNoDomid) && p.Kind.TakesLease():
			p.Source = domid.FromLease
			p.Agreeing = []domid.Source{domid.FromLease}
			p.Domid = -1
			if d, err := p.allocator().Peek(); err == nil {
				p.Domid = d
			}
		case errors.Is(err, domid.ErrNoDomid):
		case err != nil:
			return p, err
		default:
			p.HasDomid, p.Domid, p.Source, p.Agreeing = true, res.Domid, res.Source, res.Agreeing
		}
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
		case !p.Kind.Debuggable():
			p.Notes = append(p.Notes, fmt.Sprintf("DMLAUNCH_DEBUG=%s ignored: a %s invocation always passes through", strings.Join(cfg.Debug, ","), p.Kind))
		case !p.selected():
			p.Notes = append(p.Notes, fmt.Sprintf("DMLAUNCH_DEBUG=%s ignored: DMLAUNCH_DEBUG_DOMAINS does not select this domain", strings.Join(cfg.Debug, ",")))
		default:
			p.Mode = strings.Join(cfg.Debug, ",")
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
	// QEMU and its helpers learn the domid from XEN_DOMAIN_ID when the
	// toolstack did not set it (libxl sets it for HVM since Xen 4.15).
	if p.Kind != argv.KindProbe && p.Domid >= 0 && !slices.Contains(p.Agreeing, domid.FromEnv) {
		p.Env = append(append([]string(nil), in.Environ...), "XEN_DOMAIN_ID="+strconv.Itoa(p.Domid))
	}
	return p, nil
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
	return NewAllocator(p.Config.StateDir, EnvLookup(p.Env))
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
	name := p.Name
	if name == "" {
		name = "-"
	}
	switch {
	case p.Kind == argv.KindProbe:
		return "capability probe"
	case p.HasDomid || p.Domid >= 0 && p.Source == domid.FromLease:
		return "domain " + strconv.Itoa(p.Domid) + " (" + name + ")"
	case p.Name != "":
		return "domain ? (" + p.Name + ")"
	}
	return ""
}

// Describe prints every decision and the final argv, one word per line.
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
	fmt.Fprintf(w, "qemu:    %s\n", p.QEMU)
	if p.Config.File != "" {
		fmt.Fprintf(w, "config:  %s\n", p.Config.File)
	}
	for _, a := range p.Applied {
		fmt.Fprintf(w, "rewrite: %s (%s)\n", a.Rule, a.Why)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note:    %s\n", n)
	}
	fmt.Fprintln(w, "argv:")
	for _, a := range p.Argv {
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

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// outcomes are tried in order; the first match decides.
var outcomes = []outcome{
	{as[*gdbwrap.PortBusyError], ExitBadInput, "the domain was not started"},
	{as[*gdbwrap.PortRangeError], ExitBadInput, "lower the base port in DMLAUNCH_GDB_LISTEN"},
	{as[*SettingError], ExitBadInput, "dmlaunch(8) lists every setting"},
	{as[*argv.MissingValueError], ExitBadInput, "check device_model_args in the domain's configuration"},
	{as[*domid.InvalidError], ExitBadInput, "the toolstack's -xen-domid, XEN_DOMAIN_ID and DMLAUNCH_DOMID must name one domain"},
	{as[*domid.ConflictError], ExitBadInput, "the toolstack's -xen-domid, XEN_DOMAIN_ID and DMLAUNCH_DOMID must name one domain"},
	{as[*domid.HeldError], ExitBadInput, "a domain's device model runs once; see dmctl list, and stop the old one first"},
	{is(statedir.ErrUnsafe), ExitBadInput, "fix the directory or set DMLAUNCH_STATE_DIR"},
	{as[*NotFoundError], ExitNotFound, "install qemu-system-xen, or set DMLAUNCH_QEMU to the real QEMU"},
	{as[*NotExecutableError], ExitNotExecutable, "set DMLAUNCH_QEMU to the real QEMU binary, or reinstall with scripts/install.sh"},
	{is(domid.ErrExhausted), ExitInternal, "release leases with dmctl domid release, or wait for freed domids to cool down"},
}

func classify(err error) outcome {
	for _, o := range outcomes {
		if o.matches(err) {
			return o
		}
	}
	return outcome{status: ExitInternal, hint: "this is a dmlaunch fault; please report it with the command line above"}
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

// Report writes "dmlaunch: domain 5 (hvm1): <what happened>; <what to do>".
func Report(w io.Writer, p *Plan, err error) {
	subject := p.Subject()
	if subject != "" {
		subject += ": "
	}
	fmt.Fprintf(w, "dmlaunch: %s%v; %s\n", subject, err, Hint(err))
}

// Launch takes the lease, writes the registry record, logs the launch and
// execs the real QEMU in place. It returns only on failure.
func (p *Plan) Launch(stderr io.Writer) error {
	self, err := proc.Self()
	if err != nil {
		return err
	}
	var lease *domid.Lease
	if p.Kind.TakesLease() {
		l, err := p.takeLease(self)
		if err != nil {
			return err
		}
		lease = &l
	}
	var rec *registry.Record
	if p.HasDomid {
		if lease == nil { // Acquire made and checked it otherwise
			if err := statedir.Ensure(p.Config.StateDir); err != nil {
				return err
			}
		}
		r := registry.Record{
			Domid: p.Domid, Name: p.Name, Kind: string(p.Kind), Mode: p.Mode,
			Launcher: self, QEMUPID: self.PID, QEMU: p.QEMU, Argv: p.Argv, Started: time.Now().UTC(),
		}
		if _, err := registry.Write(p.Config.StateDir, r); err != nil {
			return p.undo(lease, nil, err)
		}
		rec = &r
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
	return p.undo(lease, rec, &NotExecutableError{p.QEMU, "could not be executed: " + err.Error()})
}

// takeLease records the launch's hold on its domid, or allocates one for
// a launch that carries none; holder's death ends it.
func (p *Plan) takeLease(holder proc.Identity) (domid.Lease, error) {
	req := domid.Request{Domid: -1, Kind: string(p.Kind), Name: p.Name, Holder: holder}
	if p.HasDomid {
		req.Domid = p.Domid
	}
	l, err := p.allocator().Acquire(req)
	if err == nil && !p.HasDomid {
		p.setLeasedDomid(l.Domid)
	}
	return l, err
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
	if err != nil {
		Report(stderr, p, err)
		return ExitCode(err)
	}
	if p.Config.DryRun {
		p.Describe(stdout)
		return 0
	}
	if p.Mode != ModePassThrough {
		if in.InheritedFDs == nil {
			in.InheritedFDs = InheritedFDs()
		}
		status, err := p.Supervise(in, stderr)
		if err != nil {
			Report(stderr, p, err)
			return ExitCode(err)
		}
		return status
	}
	err = p.Launch(stderr)
	Report(stderr, p, err)
	return ExitCode(err)
}
