//go:build xenlab

package xentest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkCreateToConsole times, inside dom0, "xl create" to the guest's
// first COM1 line in "xl console", and "xl destroy", for the same HVM guest
// with the real device model at its path, with dmlaunch passing through, and
// with dmlaunch in gdb mode. The domain is created paused, the console
// attached, then unpaused (the serial pty drops what nobody reads); all of
// that is inside the time. Reported as medians:
//
//	go test -tags xenlab -run '^$' -bench CreateToConsole -benchtime 5x ./xentest
func BenchmarkCreateToConsole(b *testing.B) {
	modes := []struct {
		name  string
		env   string
		extra []string
	}{
		{"real-qemu", "", []string{fmt.Sprintf("device_model_override = %q", realQEMU)}},
		{"dmlaunch-pass-through", "", nil},
		{"dmlaunch-gdb", "DMLAUNCH_CONFIG=/root/sample/gdb.conf", nil},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			name := "bench-" + strings.ReplaceAll(m.name, "-", "")
			msg := name + ": first line"
			cfg := labDir + "/" + name + ".cfg"
			put(b, []byte(hvmConfig(name, bootDisk(b, name, msg), m.extra...)), cfg)
			b.Cleanup(func() { _, _ = try("xl destroy " + name + " 2>/dev/null; true") })
			var toConsole, destroy []float64
			failed := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, err := try(fmt.Sprintf(`set -e
now() { date +%%s.%%N; }
fifo=$(mktemp -u); mkfifo "$fifo"; log=$(mktemp)
t0=$(now)
%[2]s xl create -p %[3]s >/dev/null
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
echo "$t0 $t1 $t2 $t3"`, name, m.env, cfg, msg))
				if err != nil {
					// libxl gives QEMU's QMP 10 s per command: on a loaded
					// machine a create fails now and then. Counted, not timed.
					b.Logf("run %d failed: %v", i, err)
					failed++
					_, _ = try("xl destroy " + name + " 2>/dev/null; true")
					continue
				}
				f := strings.Fields(out)
				if len(f) != 4 {
					b.Fatalf("timings: %q", out)
				}
				t := make([]float64, 4)
				for j := range f {
					v, err := strconv.ParseFloat(f[j], 64)
					if err != nil {
						b.Fatalf("timings: %q", out)
					}
					t[j] = v
				}
				toConsole = append(toConsole, t[1]-t[0])
				destroy = append(destroy, t[3]-t[2])
			}
			b.ReportMetric(median(toConsole), "s-create-to-console")
			b.ReportMetric(median(destroy), "s-destroy")
			b.ReportMetric(float64(failed), "failed-creates")
			b.Logf("%s: create to console %v, destroy %v", m.name, toConsole, destroy)
		})
	}
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
