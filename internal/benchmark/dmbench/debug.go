package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/guest"
)

const qemuTCG = "/usr/libexec/qemu-system-i386"

// heldMethod finds how gdb-wait holds QEMU in the launcher's log.
var heldMethod = regexp.MustCompile(`stopped before its first instruction \(([^)]*)\)`)

// syncBuffer collects a child's stderr while it is read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitLog(log *syncBuffer, text string, start time.Time) time.Duration {
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(log.String(), text) {
			return time.Since(start)
		}
		time.Sleep(time.Millisecond)
	}
	fatal("the launcher never logged %q", text)
	return 0
}

// qemuPIDInLog finds QEMU's pid in the launcher's log line.
var qemuPIDInLog = regexp.MustCompile(`; qemu pid (\d+);`)

// debugFigures measures the debug modes with the real QEMU, each beside
// plain pass-through in the same run.
func debugFigures(work string, rounds int) {
	if _, err := os.Stat(qemuTCG); err != nil {
		fmt.Println("Debug mode: skipped,", qemuTCG, "is not installed (scripts/deps.sh)")
		return
	}
	dmlaunch, _ := filepath.Abs("bin/dmlaunch")
	const line = "first console line\r\n"
	img, err := guest.BootSector(guest.Options{Message: line})
	check(err)
	disk := filepath.Join(work, "guest.img")
	check(os.WriteFile(disk, img, 0o644))
	args := func(serial string, extra ...string) []string {
		return append([]string{"-name", "bench", "-machine", "pc", "-accel", "tcg", "-display", "none",
			"-nodefaults", "-no-user-config", "-serial", serial, "-drive", "file=" + disk + ",format=raw,if=floppy"}, extra...)
	}
	env := func(extra ...string) []string {
		return append([]string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=" + qemuTCG,
			"DMLAUNCH_STATE_DIR=" + filepath.Join(work, "dstate"), "DMLAUNCH_LOG_DIR=" + filepath.Join(work, "dlog"),
			"XEN_DOMAIN_ID=5", "DMLAUNCH_GDB_LISTEN=127.0.0.1:" + strconv.Itoa(freePort()-5)}, extra...)
	}

	var ptReady, dbgReady, ptByte, dbgByte, held []time.Duration
	method := ""
	for range rounds {
		// Pass-through: ready when QEMU's own QMP socket accepts; first
		// byte when the guest's line reaches QEMU's stdout.
		qmp := filepath.Join(work, "pt.qmp")
		os.Remove(qmp)
		c := exec.Command(dmlaunch, args("stdio", "-qmp", "unix:"+qmp+",server=on,wait=off")...)
		c.Env = env()
		out, err := c.StdoutPipe()
		check(err)
		start := time.Now()
		check(c.Start())
		firstByte := make(chan time.Duration, 1)
		go func() {
			b := make([]byte, 1)
			if _, err := out.Read(b); err == nil {
				firstByte <- time.Since(start)
			}
		}()
		ptReady = append(ptReady, waitDial("unix", qmp, start))
		ptByte = append(ptByte, <-firstByte)
		stop(c)

		// gdb mode: ready when the debug port accepts; first byte when
		// the guest's line is in the console log.
		e := env("DMLAUNCH_DEBUG=gdb")
		port := strings.TrimPrefix(e[len(e)-2], "DMLAUNCH_GDB_LISTEN=127.0.0.1:")
		base, _ := strconv.Atoi(port)
		logPath := filepath.Join(work, "dlog", "dmlaunch-console-5.log")
		os.Remove(logPath)
		c = exec.Command(dmlaunch, args("pty")...)
		c.Env = e
		start = time.Now()
		check(c.Start())
		dbgReady = append(dbgReady, waitListening(base+5, start))
		// The log starts with the launcher's header line: wait for the
		// guest's own bytes.
		dbgByte = append(dbgByte, waitFileContains(logPath, line[:1], start))
		stop(c)

		// gdb-wait: ready when QEMU is held before its first instruction
		// and the launcher says so.
		c = exec.Command(dmlaunch, args("pty")...)
		c.Env = env("DMLAUNCH_DEBUG=gdb-wait")
		var log syncBuffer
		c.Stderr = &log
		start = time.Now()
		check(c.Start())
		held = append(held, waitLog(&log, "stopped before its first instruction (", start))
		if method == "" {
			if m := heldMethod.FindStringSubmatch(log.String()); m != nil {
				method = m[1]
			}
		}
		stop(c)
	}
	fmt.Printf("Debug mode with the real QEMU (TCG), %d launches each, medians\n", rounds)
	fmt.Printf("  %-44s %9s   pass-through, QMP socket accepting: %s\n", "launch to debug port accepting (gdb mode)", median(dbgReady), median(ptReady))
	fmt.Printf("  %-44s %9s   pass-through, on QEMU's stdout:     %s\n", "launch to first console byte in the log", median(dbgByte), median(ptByte))
	fmt.Printf("  %-44s %9s   (%s)\n", "launch to QEMU held (gdb-wait)", median(held), method)

	attachRoundTrip(dmlaunch, args("pty"), env("DMLAUNCH_DEBUG=gdb"), work, rounds)
	consoleLoss(dmlaunch, work, env("DMLAUNCH_DEBUG=console"))
	fmt.Println()
}

// attachRoundTrip times gdb attaching through the debug port and
// detaching, beside gdb attaching to QEMU's pid on the same machine.
func attachRoundTrip(dmlaunch string, args, env []string, work string, rounds int) {
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		fmt.Println("  attach/detach round trip: skipped, gdb is not installed")
		return
	}
	c := exec.Command(dmlaunch, args...)
	c.Env = env
	var stderr bytes.Buffer
	c.Stderr = &stderr
	check(c.Start())
	defer stop(c)
	base := 0
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DMLAUNCH_GDB_LISTEN=127.0.0.1:"); ok {
			base, _ = strconv.Atoi(v)
		}
	}
	target := "127.0.0.1:" + strconv.Itoa(base+5)
	waitListening(base+5, time.Now())
	qemuPID := 0
	deadline := time.Now().Add(10 * time.Second)
	for qemuPID == 0 && time.Now().Before(deadline) {
		if m := qemuPIDInLog.FindStringSubmatch(stderr.String()); m != nil {
			qemuPID, _ = strconv.Atoi(m[1])
		}
		time.Sleep(10 * time.Millisecond)
	}
	common := []string{"-nx", "-batch", "-ex", "set sysroot /", "-ex", "set debuginfod enabled off"}
	var viaPort, local []time.Duration
	for range rounds {
		start := time.Now()
		run(exec.Command(gdb, append(common, "-ex", "target remote "+target, "-ex", "detach")...))
		viaPort = append(viaPort, time.Since(start))
		time.Sleep(50 * time.Millisecond) // gdbserver leaves, the port accepts again
		if qemuPID > 0 {
			start = time.Now()
			run(exec.Command(gdb, append(common, "-p", strconv.Itoa(qemuPID), "-ex", "detach")...))
			local = append(local, time.Since(start))
		}
	}
	localText := "n/a"
	if len(local) > 0 {
		localText = fmt.Sprintf("%s (%.2fx)", median(local), ratio(median(viaPort), median(local)))
	}
	fmt.Printf("  %-44s %9s   gdb -p on the same machine:         %s\n", "gdb attach + detach through the port", median(viaPort), localText)
	if qemuPID > 0 {
		fmt.Printf("  %-44s %9s\n", "supervisor resident memory (VmRSS)", vmRSS(c.Process.Pid))
	}
}

// consoleLoss counts the bytes the guest wrote that are not in the log.
func consoleLoss(dmlaunch, work string, env []string) {
	msg := "0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 -- console loss check --\r\n"
	const repeat = 20000
	img, err := guest.BootSector(guest.Options{Message: msg, Repeat: repeat, Exit: true})
	check(err)
	disk := filepath.Join(work, "chatty.img")
	check(os.WriteFile(disk, img, 0o644))
	logPath := filepath.Join(work, "dlog", "dmlaunch-console-5.log")
	os.Remove(logPath)
	c := exec.Command(dmlaunch, append([]string{"-name", "chatty", "-machine", "pc", "-accel", "tcg", "-display", "none",
		"-nodefaults", "-no-user-config", "-drive", "file=" + disk + ",format=raw,if=floppy"}, guest.QEMUArgs()...)...)
	c.Env = env
	start := time.Now()
	_ = c.Run() // the guest ends QEMU through isa-debug-exit
	elapsed := time.Since(start)
	b, err := os.ReadFile(logPath)
	check(err)
	b = console.Strip(b) // the guest's bytes, without the launch's header line
	want := strings.Repeat(msg, repeat)
	lost := len(want) - len(b)
	if string(b) != want && lost == 0 {
		lost = -1
	}
	fmt.Printf("  %-44s %9d   of %d bytes written by the guest (%.1f MB/s, nobody on the pty)\n", "console bytes lost", lost, len(want),
		float64(len(want))/elapsed.Seconds()/1e6)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitDial(network, addr string, start time.Time) time.Duration {
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			return time.Since(start)
		}
		time.Sleep(time.Millisecond)
	}
	fatal("%s %s never accepted", network, addr)
	return 0
}

// waitListening polls the kernel's socket table rather than connecting:
// a connection would attach a debugger.
func waitListening(port int, start time.Time) time.Duration {
	hexPort := fmt.Sprintf(":%04X ", port)
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open("/proc/net/tcp")
		check(err)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", hexPort) && fields[3] == "0A" {
				f.Close()
				return time.Since(start)
			}
		}
		f.Close()
		time.Sleep(time.Millisecond)
	}
	fatal("port %d never listened", port)
	return 0
}

// waitFileContains waits for the guest's text after the log's header
// line.
func waitFileContains(path, text string, start time.Time) time.Duration {
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if _, guestPart, ok := strings.Cut(string(b), "\n"); ok && strings.Contains(guestPart, text) {
				return time.Since(start)
			}
		}
		time.Sleep(time.Millisecond)
	}
	fatal("%s never got %q", path, text)
	return 0
}

func stop(c *exec.Cmd) {
	_ = c.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

func vmRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
