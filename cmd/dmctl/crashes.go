package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/coredump"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:  "crashes",
		args:  "[DOMID] [--json] [--log-dir DIR]",
		short: "list the device models that crashed, and their cores",
		long: `One line per crash record, oldest first: when QEMU died, of which signal,
and where its core is (named dmlaunch-crash-<domid>-<guest>-<time>.core, beside
the console log) or why there is none. dmlaunch writes a record whenever a QEMU
it supervises dies of a core-dumping signal. With DOMID, only that domain's.

Open the newest core of a domain with "dmctl gdb DOMID --core".`,
		example: "  dmctl crashes\n  dmctl crashes 5 --json | jq -r '.[-1].core'",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print JSON, one object per crash")
			fs.String("log-dir", "", "where the records are (`DIR`; default: DMLAUNCH_LOG_DIR, or /var/log/xen)")
		},
		run: runCrashes,
	})
}

func logDirFlag(fs *pflag.FlagSet) string {
	if d, _ := fs.GetString("log-dir"); d != "" {
		return d
	}
	cfg, err := launcher.LoadConfig(os.LookupEnv, os.Environ())
	if err != nil || cfg.LogDir == "" {
		return launcher.DefaultLogDir
	}
	return cfg.LogDir
}

// readCrashes loads every crash record in dir, oldest first; domid < 0
// means every domain's.
func readCrashes(dir string, domid int) ([]coredump.Crash, error) {
	paths, err := filepath.Glob(filepath.Join(dir, coredump.RecordPrefix+"*.json"))
	if err != nil {
		return nil, err
	}
	var out []coredump.Crash
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return out, err
		}
		var c coredump.Crash
		if err := json.Unmarshal(b, &c); err != nil {
			return out, fmt.Errorf("crash record %s: %w", p, err)
		}
		c.Record = p
		if domid < 0 || c.Domid == domid {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

func parseDomidArg(arg string) (int, error) {
	d, err := domid.Parse(domid.Candidate{Source: "argument", Value: arg})
	if err != nil {
		return 0, usagef("%v", err)
	}
	return d, nil
}

func runCrashes(e *env, fs *pflag.FlagSet, args []string) error {
	d := -1
	switch len(args) {
	case 0:
	case 1:
		var err error
		if d, err = parseDomidArg(args[0]); err != nil {
			return err
		}
	default:
		return usagef("takes at most one DOMID")
	}
	dir := logDirFlag(fs)
	crashes, err := readCrashes(dir, d)
	if err != nil {
		return err
	}
	if j, _ := fs.GetBool("json"); j {
		if crashes == nil {
			crashes = []coredump.Crash{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(crashes)
	}
	if len(crashes) == 0 {
		fmt.Fprintf(e.stdout, "no crashes recorded in %s\n", dir)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDOMID\tNAME\tPID\tSIGNAL\tCORE\tSIZE")
	for _, c := range crashes {
		core, size := c.Core, "-"
		switch {
		case core != "":
			size = strconv.FormatInt(c.CoreSize, 10)
			if !c.Whole {
				size += " (cut short)"
			}
		default:
			core = "none: " + c.Note
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", c.Time.Local().Format(time.DateTime), c.Domid,
			dash(shellquote.Visible(c.Name)), c.PID, c.Signal, shellquote.Visible(core), size)
	}
	return tw.Flush()
}

// newestCore is the domain's latest crash that left a core file here.
func newestCore(dir string, d int) (coredump.Crash, error) {
	crashes, err := readCrashes(dir, d)
	if err != nil {
		return coredump.Crash{}, err
	}
	for i := len(crashes) - 1; i >= 0; i-- {
		c := crashes[i]
		if c.Core == "" {
			continue
		}
		if _, err := os.Stat(c.Core); err != nil {
			return c, fmt.Errorf("domain %d: the newest core, %s, is gone: %v", d, c.Core, err)
		}
		return c, nil
	}
	if len(crashes) > 0 {
		last := crashes[len(crashes)-1]
		return last, fmt.Errorf("domain %d: no core kept for its crashes; the last (%s, %s) has none: %s",
			d, last.Time.Local().Format(time.DateTime), last.Signal, last.Note)
	}
	return coredump.Crash{}, fmt.Errorf("domain %d: no crash recorded in %s; dmctl crashes lists them", d, dir)
}

// coreGDBArgs opens a core with the binary that dumped it. "set sysroot /"
// reads the libraries from this machine, where they were mapped.
func coreGDBArgs(c coredump.Crash) []string {
	return []string{"-q", "-ex", "set sysroot /", c.QEMU, c.Core}
}

// checkBinary warns when the QEMU on disk is not the build that crashed:
// gdb would then show wrong symbols.
func checkBinary(w io.Writer, c coredump.Crash) {
	if c.BuildID == "" {
		return
	}
	id, err := coredump.BuildID(c.QEMU)
	switch {
	case err != nil:
		fmt.Fprintf(w, "dmctl gdb: warning: %s: %v; the core needs the QEMU build %s\n", c.QEMU, err, c.BuildID)
	case id != c.BuildID:
		fmt.Fprintf(w, "dmctl gdb: warning: %s is build %s, but build %s crashed (QEMU was upgraded?); install that build for true symbols\n",
			c.QEMU, id, c.BuildID)
	}
}

// runCoreGDB is "dmctl gdb DOMID --core".
func runCoreGDB(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usagef("needs one DOMID")
	}
	d, err := parseDomidArg(args[0])
	if err != nil {
		return err
	}
	c, err := newestCore(logDirFlag(fs), d)
	if err != nil {
		return err
	}
	gdb, _ := fs.GetString("gdb")
	checkBinary(e.stderr, c)
	if p, _ := fs.GetBool("print"); p {
		fmt.Fprintf(e.stdout, "# Domain %d (%s): QEMU pid %d killed by %s at %s.\n", c.Domid, shellquote.Visible(c.Name), c.PID, c.Signal, c.Time.Local().Format(time.DateTime))
		fmt.Fprintf(e.stdout, "%s\n", shellquote.Join(append([]string{gdb}, coreGDBArgs(c)...)))
		return nil
	}
	path, err := exec.LookPath(gdb)
	if err != nil {
		return fmt.Errorf("%s not found: install gdb", gdb)
	}
	return syscall.Exec(path, append([]string{path}, coreGDBArgs(c)...), os.Environ())
}
