//go:build xenlab

package xentest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// benchModes are the device models BenchmarkCreateToConsole compares: the
// real one at its path (device_model_override), dmlaunch passing through,
// and dmlaunch in gdb mode.
var benchModes = []struct {
	name  string
	env   string
	extra []string
}{
	{"real", "", []string{fmt.Sprintf("device_model_override = %q", realQEMU)}},
	{"pass", "", nil},
	{"gdb", "DMLAUNCH_CONFIG=/root/sample/gdb.conf", nil},
}

// BenchmarkCreateToConsole times, inside dom0, "xl create" to the guest's
// first COM1 line in "xl console", and "xl destroy", for the same HVM guest
// with each of benchModes. The domain is created paused, the console
// attached, then unpaused (the serial pty drops what nobody reads); all of
// that is inside the time. Every round runs the three once each, in an
// order that rotates from round to round, so that a change in the
// machine's load falls on all of them alike. Reported: medians in seconds
// and each mode's ratio of medians against the real device model.
//
//	go test -tags xenlab -run '^$' -bench CreateToConsole -benchtime 5x ./xentest
func BenchmarkCreateToConsole(b *testing.B) {
	cfgs := make([]string, len(benchModes))
	for i, m := range benchModes {
		name := "bench-" + m.name
		cfgs[i] = labDir + "/" + name + ".cfg"
		put(b, []byte(hvmConfig(name, bootDisk(b, name, name+": first line"), m.extra...)), cfgs[i])
		b.Cleanup(func() { _, _ = try("xl destroy " + name + " 2>/dev/null; true") })
	}
	toConsole := make([][]float64, len(benchModes))
	destroy := make([][]float64, len(benchModes))
	failed := 0
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		for k := range benchModes {
			i := (round + k) % len(benchModes)
			m := benchModes[i]
			c, d, err := createToConsole("bench-"+m.name, m.env, cfgs[i])
			if err != nil {
				// libxl gives QEMU's QMP 10 s per command: on a loaded
				// machine a create fails now and then. Counted, not timed.
				b.Logf("%s, round %d: %v", m.name, round, err)
				failed++
				_, _ = try("xl destroy bench-" + m.name + " 2>/dev/null; true")
				continue
			}
			toConsole[i] = append(toConsole[i], c)
			destroy[i] = append(destroy[i], d)
		}
	}
	b.StopTimer()
	for i, m := range benchModes {
		b.ReportMetric(median(toConsole[i]), "s-create-"+m.name)
		b.ReportMetric(median(destroy[i]), "s-destroy-"+m.name)
		if i > 0 {
			b.ReportMetric(median(toConsole[i])/median(toConsole[0]), "x-create-"+m.name)
			b.ReportMetric(median(destroy[i])/median(destroy[0]), "x-destroy-"+m.name)
		}
		b.Logf("%s: create to console %.2f, destroy %.2f (s)", m.name, toConsole[i], destroy[i])
	}
	b.ReportMetric(float64(failed), "failed-creates")
}

// createToConsole runs one create, console, unpause, first line, destroy
// cycle of the domain name in dom0 and returns the seconds from create to
// the guest's line and those of the destroy.
func createToConsole(name, env, cfg string) (toConsole, destroy float64, err error) {
	out, err := try(fmt.Sprintf(`set -e
now() { date +%%s.%%N; }
fifo=$(mktemp -u); mkfifo "$fifo"; log=$(mktemp)
t0=$(now)
%[2]s xl create -p %[3]s >/dev/null
# A stdin that never writes: with /dev/null xl console spins.
setsid xl console -t serial %[1]s <>"$fifo" >"$log" 2>&1 & pid=$!
until ls -l /proc/$pid/fd 2>/dev/null | grep -q /dev/pts/; do sleep 0.02; done
xl unpause %[1]s
end=$((SECONDS + 300))
until grep -qF -- %[4]q "$log"; do [ $SECONDS -lt $end ] || exit 1; sleep 0.02; done
t1=$(now)
kill $pid; rm -f "$fifo" "$log"
t2=$(now)
xl destroy %[1]s
t3=$(now)
echo "$t0 $t1 $t2 $t3"`, name, env, cfg, name+": first line"))
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		return 0, 0, fmt.Errorf("timings: %q", out)
	}
	var t [4]float64
	for j := range f {
		if t[j], err = strconv.ParseFloat(f[j], 64); err != nil {
			return 0, 0, fmt.Errorf("timings: %q", out)
		}
	}
	return t[1] - t[0], t[3] - t[2], nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
