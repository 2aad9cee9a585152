package argv

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helpOptions reads the option names a QEMU binary's -help lists.
func helpOptions(t *testing.T, qemu string) []string {
	out, err := exec.Command(qemu, "-help").Output()
	require.NoError(t, err, "%s -help", qemu)
	seen := map[string]bool{}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "-") {
			continue
		}
		// "-fda/-fdb file", "-h or -help", "--preconfig"
		head, _, _ := strings.Cut(line, " ")
		alts := strings.Split(head, "/")
		if strings.HasPrefix(line, "-h or -help") {
			alts = []string{"-h", "-help"}
		}
		for _, a := range alts {
			n := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
			if n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	require.Greater(t, len(names), 80, "%s -help listed too few options to be real", qemu)
	return names
}

type arity int

const (
	arityInvalid arity = iota
	arityFlag
	arityValue
)

// askQEMU asks the binary itself whether an option takes a value. QEMU's
// first pass over argv looks every option up and stops with "requires an
// argument" when one that takes a value is last; an option without one
// passes, and -version, first in the second pass, exits before anything
// starts.
func askQEMU(t *testing.T, qemu, name string) arity {
	var stderr bytes.Buffer
	cmd := exec.Command(qemu, "-version", "-"+name)
	cmd.Stderr = &stderr
	err := cmd.Run()
	switch msg := stderr.String(); {
	case strings.Contains(msg, "invalid option"):
		return arityInvalid
	case strings.Contains(msg, "requires an argument"):
		return arityValue
	case err == nil:
		return arityFlag
	default:
		t.Fatalf("%s -version -%s: unexpected answer %v: %s", qemu, name, err, msg)
		return arityInvalid
	}
}

func TestOptionTableMatchesRealQEMU(t *testing.T) {
	for _, qemu := range []string{realtest.QEMUTCG, realtest.QEMUXen} {
		t.Run(qemu, func(t *testing.T) {
			realtest.Need(t, qemu)
			names := map[string]bool{}
			for _, n := range helpOptions(t, qemu) {
				names[n] = true
			}
			for _, n := range Options() {
				names[n] = true
			}
			type answer struct {
				name string
				got  arity
			}
			answers := make(chan answer, len(names))
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for n := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					answers <- answer{n, askQEMU(t, qemu, n)}
				}()
			}
			wg.Wait()
			close(answers)
			checked := 0
			for a := range answers {
				known, hasValue := Known(a.name)
				switch {
				case a.got == arityInvalid:
					assert.True(t, inTable(laterOptions, a.name) || inTable(buildOptions, a.name),
						"-%s is in the table but %s does not know it", a.name, qemu)
				case !known:
					assert.Fail(t, "option missing from the table", "-%s (%s says it %s)", a.name, qemu, map[arity]string{arityFlag: "is a flag", arityValue: "takes a value"}[a.got])
				default:
					checked++
					assert.Equal(t, a.got == arityValue, hasValue, "-%s: table and %s disagree on whether it takes a value", a.name, qemu)
				}
			}
			assert.Greater(t, checked, 100)
		})
	}
}

func TestOptionTablesSorted(t *testing.T) {
	for name, table := range map[string][]string{"valueOptions": valueOptions, "flagOptions": flagOptions,
		"laterOptions": laterOptions, "buildOptions": buildOptions} {
		assert.True(t, slices.IsSorted(table), "%s must stay sorted: Known searches it by bisection", name)
		assert.Equal(t, len(table), len(slices.Compact(slices.Clone(table))), "%s has duplicates", name)
	}
	for _, n := range flagOptions {
		assert.False(t, inTable(valueOptions, n), "-%s is in both tables", n)
	}
}
