package launcher

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every domain start is a pass-through launch: what a package linked into
// dmlaunch builds at start-up (compiled patterns, map literals, tables)
// every launch pays for, though only the debug modes may use it.
func TestPassThroughStartUpBuildsNothingOfItsOwn(t *testing.T) {
	r := launch(t, run{args: []string{"-xen-domid", "5", "-machine", "xenfv"}, env: []string{"GODEBUG=inittrace=1"}})
	require.True(t, r.started)
	// dmlaunch's trace comes before its log line; the fake QEMU's after.
	trace, _, found := strings.Cut(r.stderr, "dmlaunch: domain 5")
	require.True(t, found, "the launch's log line")
	allocs := map[string]int{}
	for _, line := range strings.Split(trace, "\n") {
		// init PKG @0.5 ms, 0.01 ms clock, 672 bytes, 7 allocs
		f := strings.Fields(line)
		if len(f) == 11 && f[0] == "init" && f[10] == "allocs" {
			n, err := strconv.Atoi(f[9])
			require.NoError(t, err, line)
			allocs[f[1]] = n
		}
	}
	require.Contains(t, allocs, "runtime", "the init trace was read:\n%s", trace)
	for _, heavy := range []string{"regexp", "regexp/syntax", "encoding/json", "text/template"} {
		assert.NotContains(t, allocs, heavy, "a launch starts %s", heavy)
	}
	// launcher itself splits the known QEMU paths (set at link time) and
	// builds nothing else: the exit status table's matchers and the
	// supervisor's signals are functions, not closures or maps.
	for pkg, n := range allocs {
		if pkg == "github.com/dmlaunch/dmlaunch/launcher" {
			assert.LessOrEqual(t, n, 1, "%s allocates at start-up more than the known QEMU paths", pkg)
		} else if strings.HasPrefix(pkg, "github.com/dmlaunch/") {
			assert.Zero(t, n, "%s allocates at start-up", pkg)
		}
	}
}
