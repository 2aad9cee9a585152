// Command dmbench measures what dmlaunch costs, each figure beside the
// obvious alternative measured in the same run, and prints the ratios.
// Run it from the repository root after "make build" (make bench does).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/dmlaunch/dmlaunch/internal/toolstack"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "lease-worker":
			leaseWorker(os.Args[2], atoi(os.Args[3]))
			return
		case "counter-worker":
			counterWorker(os.Args[2], atoi(os.Args[3]))
			return
		}
	}
	rounds := flag.Int("rounds", 300, "launches per variant")
	procs := flag.Int("procs", 64, "concurrent allocating processes")
	perProc := flag.Int("per-proc", 50, "allocations per process")
	debugRounds := flag.Int("debug-rounds", 10, "QEMU launches per debug-mode figure")
	baseline := flag.String("baseline", "", "another dmlaunch `binary` (an earlier build) to time beside this one")
	flag.Parse()

	work, err := os.MkdirTemp(stateBase(), "dmbench")
	check(err)
	defer os.RemoveAll(work)

	passThrough(work, *rounds, *baseline)
	allocators(work, *procs, *perProc)
	debugFigures(work, *debugRounds)
}

// stateBase is a tmpfs, as /run is on a Xen host (in some containers it
// is not, and fsync there measures the disk).
func stateBase() string {
	for _, d := range []string{"/run", "/dev/shm"} {
		var st unix.Statfs_t
		if unix.Statfs(d, &st) == nil && st.Type == unix.TMPFS_MAGIC && unix.Access(d, unix.W_OK) == nil {
			return d
		}
	}
	fmt.Fprintln(os.Stderr, "dmbench: no writable tmpfs at /run or /dev/shm; state goes to", os.TempDir())
	return os.TempDir()
}

type variant struct {
	name string
	cmd  func() *exec.Cmd
	runs []time.Duration
}

func passThrough(work string, rounds int, baseline string) {
	target, err := exec.LookPath("true")
	check(err)
	target, _ = filepath.Abs(target)
	built, _ := filepath.Abs("bin/dmlaunch")
	if _, err := os.Stat(built); err != nil {
		fatal("bin/dmlaunch is not built; run make build")
	}
	execonlyBuilt := filepath.Join(work, "execonly.built")
	// Built as make build builds dmlaunch (trimmed paths, no symbol table
	// or DWARF): the two binaries differ in what they do, not in how they
	// were linked.
	out, err := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", execonlyBuilt, "./internal/benchmark/execonly").CombinedOutput()
	if err != nil {
		fatal("build execonly: %v\n%s", err, out)
	}
	// Both Go programs are copied the same way into one directory on the
	// disk beside bin/, as an install copies them: how a binary came into
	// the page cache (written by the linker, copied, on tmpfs) changes how
	// many page faults its start-up takes, by up to a tenth here.
	binDir, err := os.MkdirTemp(filepath.Dir(built), "bench")
	check(err)
	defer os.RemoveAll(binDir)
	dmlaunch, execonly := filepath.Join(binDir, "dmlaunch"), filepath.Join(binDir, "execonly")
	check(copyFile(built, dmlaunch))
	check(copyFile(execonlyBuilt, execonly))
	counter := filepath.Join(work, "counter")
	// The wrappers people use today: guess the domid from a counter file,
	// then exec the real thing; written for sh (dash on Debian) or bash.
	wrapper := func(shell string) string {
		path := filepath.Join(work, "wrapper."+filepath.Base(shell))
		check(os.WriteFile(path, []byte(`#!`+shell+`
n=$(cat `+counter+` 2>/dev/null || echo 0)
echo $((n + 1)) > `+counter+`
exec `+target+` "$@"
`), 0o755))
		return path
	}
	shWrapper, bashWrapper := wrapper("/bin/sh"), wrapper("/bin/bash")

	args := toolstack.Invocations[0].Expand("17", work, "/srv/disk.img", "/srv/cd.iso")
	env := []string{"PATH=" + os.Getenv("PATH")}
	variants := []*variant{
		{name: "direct exec of the program", cmd: func() *exec.Cmd { return exec.Command(target, args...) }},
		{name: "exec-only Go program", cmd: func() *exec.Cmd {
			c := exec.Command(execonly, args...)
			c.Env = append(env, "EXECONLY_TARGET="+target)
			return c
		}},
		{name: "sh wrapper with a counter file", cmd: func() *exec.Cmd { return exec.Command(shWrapper, args...) }},
		{name: "dmlaunch pass-through", cmd: func() *exec.Cmd {
			c := exec.Command(dmlaunch, args...)
			c.Env = append(env, "DMLAUNCH_QEMU="+target, "DMLAUNCH_STATE_DIR="+filepath.Join(work, "state"))
			return c
		}},
	}
	variants = append(variants, &variant{name: "bash wrapper with a counter file", cmd: func() *exec.Cmd { return exec.Command(bashWrapper, args...) }})
	if baseline != "" {
		// Copied like the others, with a state directory of its own.
		old := filepath.Join(binDir, "dmlaunch.baseline")
		check(copyFile(baseline, old))
		variants = append(variants, &variant{name: "baseline dmlaunch pass-through", cmd: func() *exec.Cmd {
			c := exec.Command(old, args...)
			c.Env = append(env, "DMLAUNCH_QEMU="+target, "DMLAUNCH_STATE_DIR="+filepath.Join(work, "state.baseline"))
			return c
		}})
	}
	for _, v := range variants { // warm caches
		for range 10 {
			run(v.cmd())
		}
	}
	// Interleaved in random order, so drift in the machine's load hits
	// every variant alike.
	for range rounds {
		for _, i := range rand.Perm(len(variants)) {
			v := variants[i]
			start := time.Now()
			run(v.cmd())
			v.runs = append(v.runs, time.Since(start))
		}
	}
	fmt.Printf("State directory on %s; dmlaunch and the exec-only program copied alike into %s\n", work, binDir)
	fmt.Printf("Pass-through cost: %d launches of each, interleaved; the QEMU stand-in is %s, argv is libxl's HVM line (%d words)\n", rounds, target, len(args))
	for _, v := range variants {
		fmt.Printf("  %-36s median %8s  p90 %8s\n", v.name, median(v.runs), pct(v.runs, 90))
	}
	dm := median(variants[3].runs)
	fmt.Printf("  dmlaunch / exec-only Go program      %.2fx  (target <= 1.15x)\n", ratio(dm, median(variants[1].runs)))
	fmt.Printf("  dmlaunch / sh wrapper                %.2fx  (target <= 0.70x)\n", ratio(dm, median(variants[2].runs)))
	fmt.Printf("  dmlaunch / bash wrapper              %.2fx\n", ratio(dm, median(variants[4].runs)))
	fmt.Printf("  exec-only Go program / sh wrapper    %.2fx  (the floor for any Go program)\n", ratio(median(variants[1].runs), median(variants[2].runs)))
	fmt.Printf("  dmlaunch / direct exec               %.2fx\n", ratio(dm, median(variants[0].runs)))
	if baseline != "" {
		fmt.Printf("  dmlaunch / baseline dmlaunch         %.2fx  (%s)\n", ratio(dm, median(variants[5].runs)), baseline)
	}
	fmt.Println()
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func run(c *exec.Cmd) {
	if out, err := c.CombinedOutput(); err != nil {
		fatal("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
	}
}

func allocators(work string, procs, perProc int) {
	self, err := os.Executable()
	check(err)
	leaseDir := filepath.Join(work, "leases")
	counter := filepath.Join(work, "alloc-counter")

	leaseTime, leaseGot := spawnWorkers(self, "lease-worker", leaseDir, procs, perProc)
	counterTime, counterGot := spawnWorkers(self, "counter-worker", counter, procs, perProc)

	total := procs * perProc
	dups := total - len(distinct(counterGot))
	fmt.Printf("Allocation with %d concurrent processes, %d allocations each\n", procs, perProc)
	fmt.Printf("  %-36s %8.0f/s  %d allocations in %s; every lease taken under flock, written by rename\n",
		"dmlaunch lease allocator", float64(len(leaseGot))/leaseTime.Seconds(), len(leaseGot), leaseTime.Round(time.Millisecond))
	fmt.Printf("  %-36s %8.0f/s  %d allocations in %s; %d of them duplicates\n",
		"counter file in /tmp (the old way)", float64(len(counterGot))/counterTime.Seconds(), len(counterGot), counterTime.Round(time.Millisecond), dups)
	fmt.Printf("  lease allocator / counter file       %.2fx the time per allocation\n",
		ratio(leaseTime/time.Duration(max(len(leaseGot), 1)), counterTime/time.Duration(max(len(counterGot), 1))))
	fmt.Println()
}

func spawnWorkers(self, mode, target string, procs, perProc int) (time.Duration, []int) {
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	start := time.Now()
	for range procs {
		c := exec.Command(self, mode, target, strconv.Itoa(perProc))
		c.Env = append(os.Environ(), "LIBXL_DOMID_REUSE_TIMEOUT=0")
		out, err := c.StdoutPipe()
		check(err)
		check(c.Start())
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			var mine []int
			for sc.Scan() {
				mine = append(mine, atoi(sc.Text()))
			}
			if err := c.Wait(); err != nil {
				fatal("%s worker: %v", mode, err)
			}
			mu.Lock()
			got = append(got, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return time.Since(start), got
}

// leaseWorker takes leases the way launches do: each new lease taken while
// the last is still held, then the last released.
func leaseWorker(dir string, n int) {
	me, err := proc.Self()
	check(err)
	a := domid.NewAllocator(dir)
	a.History, a.ReuseTimeout = "", 0
	prev := -1
	w := bufio.NewWriter(os.Stdout)
	for range n {
		l, err := a.Acquire(domid.Request{Domid: -1, Kind: "hvm", Holder: me})
		check(err)
		if prev >= 0 {
			check(a.Release(prev, me))
		}
		prev = l.Domid
		fmt.Fprintln(w, l.Domid)
	}
	check(w.Flush())
}

// counterWorker is the racy wrapper's allocation: read, add one, write.
func counterWorker(path string, n int) {
	w := bufio.NewWriter(os.Stdout)
	for range n {
		b, _ := os.ReadFile(path)
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		v++
		_ = os.WriteFile(path, []byte(strconv.Itoa(v)+"\n"), 0o644)
		fmt.Fprintln(w, v)
	}
	check(w.Flush())
}

func distinct(xs []int) map[int]bool {
	m := map[int]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Microsecond)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	check(err)
	return n
}

func check(err error) {
	if err != nil {
		fatal("%v", err)
	}
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "dmbench: "+format+"\n", a...)
	os.Exit(1)
}
