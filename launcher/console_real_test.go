package launcher

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/console"
	"github.com/dmlaunch/dmlaunch/internal/guest"
	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const chattyLine = "0123456789 the quick brown fox jumps over the lazy dog 0123456789 ~!@#$%^&*()_+ ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"

// finalLine parses the launcher's last line: N console bytes kept, M not.
var finalLine = regexp.MustCompile(`QEMU \(pid \d+\) [^;]*; (\d+) console bytes in (\S+)(?: \((\d+) since it was reopened after rotation, (\d+) in rotated files\))?(?:, (\d+) not kept \(([^)]*)\))?\n`)

type accounting struct {
	kept, lost int64
	reason     string
}

func parseFinal(t *testing.T, stderr string) accounting {
	t.Helper()
	m := finalLine.FindStringSubmatch(stderr)
	require.NotNil(t, m, "no final line in:\n%s", stderr)
	var a accounting
	a.kept, _ = strconv.ParseInt(m[1], 10, 64)
	a.lost, _ = strconv.ParseInt(m[5], 10, 64)
	a.reason = m[6]
	return a
}

// The console log's directory fills up under a guest that writes without
// end (and under one that stops): the toolstack's log says so once, the
// count on the final line is what the file holds, and, when the guest's
// total is known, kept plus lost is all of it.
func TestConsoleLogOnAFullDisk(t *testing.T) {
	qemu := realtest.Need(t, realtest.QEMUTCG)[0]
	for _, forever := range []bool{true, false} {
		t.Run(map[bool]string{true: "endless guest", false: "guest that stops"}[forever], func(t *testing.T) {
			logDir := realtest.Tmpfs(t, 128<<10)
			const repeat = 2400 // about 260 KB, twice the disk
			disk := bootImage(t, guest.Options{Message: chattyLine, Forever: forever, Repeat: repeat, Exit: true})
			s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=console", "DMLAUNCH_LOG_DIR=" + logDir}, guestArgs("full", disk))
			const full = "write: no space left on device; console bytes are being lost (counted, and reported when QEMU exits)"
			s.waitLog(t, full)
			if forever {
				// The toolstack destroys the domain while the guest
				// writes on and the disk stays full.
				require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
				assert.Equal(t, 0, s.wait(t, 30*time.Second))
			} else {
				assert.Equal(t, guest.ExitStatus(0), s.wait(t, 120*time.Second))
			}
			stderr := s.stderr.String()
			assert.Equal(t, 1, strings.Count(stderr, "no space left on device; console bytes are being lost"), "reported once:\n%s", stderr)
			a := parseFinal(t, stderr)
			assert.Positive(t, a.lost)
			assert.Equal(t, "write: no space left on device", a.reason)

			b, err := os.ReadFile(filepath.Join(logDir, "dmlaunch-console-5.log"))
			require.NoError(t, err)
			kept := console.Strip(b)
			assert.Equal(t, a.kept, int64(len(kept)), "the final line's count is what the file holds")
			want := strings.Repeat(chattyLine, len(kept)/len(chattyLine)+1)
			assert.True(t, bytes.Equal([]byte(want[:len(kept)]), kept), "the file holds the guest's first bytes, unchanged")
			if !forever {
				assert.Equal(t, int64(repeat*len(chattyLine)), a.kept+a.lost, "kept plus lost is everything the guest wrote")
			}
			t.Logf("%d bytes kept, %d lost: %s", a.kept, a.lost, strings.TrimSpace(stderr[strings.LastIndex(stderr, "dmlaunch: "):]))
		})
	}
}

// logrotate with the installed snippet, and a plain rename, while a guest
// writes without end: not a byte lost, none twice, all in order across the
// files, whatever the machine's speed.
func TestConsoleLogSurvivesRotation(t *testing.T) {
	paths := realtest.Need(t, realtest.QEMUTCG, realtest.Logrotate)
	qemu, logrotate := paths[0], paths[1]
	logDir := filepath.Join(t.TempDir(), "log")
	disk := bootImage(t, guest.Options{Message: chattyLine, Forever: true})
	s := startSupervised(t, qemu, []string{"DMLAUNCH_DEBUG=console", "DMLAUNCH_LOG_DIR=" + logDir}, guestArgs("rotated", disk))
	log := filepath.Join(logDir, "dmlaunch-console-5.log")

	// The snippet install.sh puts in /etc/logrotate.d, aimed at this
	// test's directory.
	snippet, err := os.ReadFile("../scripts/dmlaunch.logrotate")
	require.NoError(t, err)
	conf := filepath.Join(t.TempDir(), "dmlaunch")
	require.NoError(t, os.WriteFile(conf, bytes.ReplaceAll(snippet, []byte("/var/log/xen/"), []byte(logDir+"/")), 0o644))

	// 1: a rename, as an operator or another rotation tool would.
	waitLogSize(t, log, 100<<10)
	require.NoError(t, os.Rename(log, log+".1"))
	waitLogSize(t, log, 100<<10)
	// 2: logrotate itself, forced: log.1 becomes log.2.gz, log becomes log.1.
	out, err := exec.Command(logrotate, "-v", "-f", "-s", filepath.Join(t.TempDir(), "status"), conf).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.FileExists(t, log+".2.gz", "%s", out)
	waitLogSize(t, log, 100<<10)
	// The toolstack ends the domain, the guest still writing.
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	assert.Equal(t, 0, s.wait(t, 60*time.Second))

	var all []byte
	for _, part := range []string{log + ".2.gz", log + ".1", log} {
		f, err := os.Open(part)
		require.NoError(t, err)
		var r io.Reader = f
		if strings.HasSuffix(part, ".gz") {
			r, err = gzip.NewReader(f)
			require.NoError(t, err)
		}
		b, err := io.ReadAll(r)
		f.Close()
		require.NoError(t, err)
		if part != log+".2.gz" {
			assert.Regexp(t, `^=== dmlaunch \S+: domain 5 \(rotated\), launcher pid \d+: console log continues after rotation ===\n`, string(b), "%s starts with its header", part)
		}
		t.Logf("%s: %d bytes", filepath.Base(part), len(b))
		all = append(all, console.Strip(b)...)
	}
	a := parseFinal(t, s.stderr.String())
	assert.Zero(t, a.lost)
	require.Equal(t, a.kept, int64(len(all)), "the files hold every byte the final line counts, once")
	want := strings.Repeat(chattyLine, len(all)/len(chattyLine)+1)[:len(all)]
	assert.True(t, bytes.Equal([]byte(want), all), "every byte the guest wrote, in order, none missing")
	assert.Regexp(t, `\d+ console bytes in \S+ \(\d+ since it was reopened after rotation, \d+ in rotated files\)\n`, s.stderr.String())
}
