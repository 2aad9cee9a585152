package launcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/require"
)

// BenchmarkStartupToFirstConsoleByte times the built-in guest from the
// toolstack's exec of dmlaunch to the guest's first line on its serial
// port, in pass-through and in each mode that runs QEMU under a tool:
//
//	go test -run '^$' -bench StartupToFirstConsoleByte -benchtime 3x ./launcher
func BenchmarkStartupToFirstConsoleByte(b *testing.B) {
	qemu := realtest.Need(b, realtest.QEMUTCG)[0]
	const line = "first console line"
	img, err := guest.BootSector(guest.Options{Message: line + "\r\n"})
	require.NoError(b, err)
	disk := filepath.Join(b.TempDir(), "boot.img")
	require.NoError(b, os.WriteFile(disk, img, 0o644))
	for _, mode := range []string{"pass-through", ModeConsole, ModeStrace, ModeMemcheck} {
		b.Run(mode, func(b *testing.B) {
			switch mode {
			case ModeStrace:
				realtest.Need(b, "strace")
			case ModeMemcheck:
				realtest.Need(b, "valgrind", "vgdb")
			}
			var total time.Duration
			for i := 0; i < b.N; i++ {
				total += startupOnce(b, qemu, mode, disk, line)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/first-line")
		})
	}
}

// startupOnce launches the guest once and returns the time to its line.
func startupOnce(b *testing.B, qemu, mode, disk, line string) time.Duration {
	dir := b.TempDir()
	serial := filepath.Join(dir, "serial.out") // pass-through: QEMU's own file
	out := ConsoleLogPath(filepath.Join(dir, "log"), 5)
	env := []string{"PATH=" + os.Getenv("PATH"), "DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=" + qemu, "XEN_DOMAIN_ID=5",
		"DMLAUNCH_STATE_DIR=" + filepath.Join(dir, "state"), "DMLAUNCH_LOG_DIR=" + filepath.Join(dir, "log"),
		"DMLAUNCH_GDB_LISTEN=unix"}
	if mode == "pass-through" {
		out = serial
	} else {
		env = append(env, "DMLAUNCH_DEBUG="+mode)
	}
	args := []string{"-name", "bench", "-machine", "pc", "-accel", "tcg", "-display", "none", "-nodefaults",
		"-no-user-config", "-serial", "file:" + serial, "-drive", "file=" + disk + ",format=raw,if=floppy"}
	cmd := exec.Command(dmlaunchBin, args...)
	cmd.Env, cmd.Dir = env, dir
	b.StartTimer()
	start := time.Now()
	require.NoError(b, cmd.Start())
	deadline := start.Add(5 * time.Minute)
	var took time.Duration
	for {
		if data, _ := os.ReadFile(out); strings.Contains(string(data), line) {
			took = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatalf("%s: no console line within 5 minutes", mode)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return took
}
