package console

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The patterns the hand-written matchers stand for: they are the
// specification, kept here so that the launcher does not link regexp.
var (
	anyHeaderPattern = regexp.MustCompile(`(?:\A|\n)=== dmlaunch [^\n]* ===\n`)
	partStartPattern = regexp.MustCompile(`(?m)^=== dmlaunch \S+: domain \d+ \(.*\), launcher pid (\d+): console log (starts|continues after rotation) ===$`)
)

// regexpLastPartStart is lastPartStart by partStartPattern.
func regexpLastPartStart(b []byte) (pid string, end int, ok bool) {
	locs := partStartPattern.FindAllSubmatchIndex(b, -1)
	if locs == nil {
		return "", 0, false
	}
	last := locs[len(locs)-1]
	return string(b[last[2]:last[3]]), last[1], true
}

// headerCorpus is console logs and pieces of them that the matchers must
// judge as the patterns do: real headers, near misses of every part, and
// headers cut at a chunk's edge.
func headerCorpus() []string {
	t := time.Date(2026, 12, 2, 15, 4, 5, 0, time.UTC)
	starts := Header(t, 5, "web1", 4242, "console log starts")
	rotated := Header(t, 5, "guest with spaces", 77, "console log continues after rotation")
	gap := Header(t, 5, "web1", 4242, "17 bytes lost: the log could not be written")
	odd := Header(t, 12, "a), launcher pid 9: console log starts ===\nx", 31, "console log starts")
	lines := []string{
		starts, rotated, gap, odd,
		"=== dmlaunch  ===\n", "=== dmlaunch ===\n", "=== dmlaunch x ===\n", "=== dmlaunch x ==\n", "=== dmlaunch x ===",
		"=== dmlaunch x === \n", " === dmlaunch x ===\n", "=== dmlaunch\tx ===\n", "=== dmlaunch x ===\r\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 7: console log continues after rotation ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 7: console log stops ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid : console log starts ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid x7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 007: console log starts ===\n",
		"=== dmlaunch T: domain  (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5x (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch : domain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T domain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T:  domain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T:\tdomain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch a:b:c: domain 5 (n), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (n, launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (), launcher pid 7: console log starts === \n",
		"=== dmlaunch T: domain 5 (\xff\xfe), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 7: console log starts ===\n=== dmlaunch T: domain 5 (n), launcher pid 8: console log starts ===\n",
		"=== dmlaunch T: domain 5 (), launcher pid 7: console log starts ===\r\n",
		"=== dmlaunch T: domain 5 (n), launcher pid 7: console log starts ====\n",
		"=== dmlaunch T: domain 5 ), launcher pid 7: console log starts ===\n",
		"=== dmlaunch T: domain 5 (), launcher pid 7: console log starts",
	}
	guest := []string{"", "\n", "\n\n", "boot\n", "no newline", "\r\n", "=== not ours ===\n", "x=== dmlaunch x ===\n", "\xff\x00"}
	var out []string
	for _, l := range lines {
		for _, g := range guest {
			out = append(out, l, g+l, l+g, g+"\n"+l+g, g+l+l+g, g+l+"\n"+l+g)
			out = append(out, l[:len(l)/2], l[len(l)/2:]+g, g+l[:len(l)-1], l[1:]+g)
		}
	}
	var log strings.Builder
	for i, l := range lines {
		log.WriteString(guest[i%len(guest)])
		if i%3 != 0 {
			log.WriteString("\n")
		}
		log.WriteString(l)
	}
	return append(out, log.String())
}

func TestStripMatchesItsPattern(t *testing.T) {
	stripped := 0
	for i, in := range headerCorpus() {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			assert.Equal(t, anyHeaderPattern.ReplaceAll([]byte(in), nil), Strip([]byte(in)), "%q", in)
		})
		if anyHeaderPattern.MatchString(in) {
			stripped++
		}
	}
	assert.Greater(t, stripped, 100, "the corpus has headers to strip")
	assert.Nil(t, Strip(nil))
	assert.Nil(t, Strip([]byte{}))
}

func TestLastPartStartMatchesItsPattern(t *testing.T) {
	found, missed := 0, 0
	for i, in := range headerCorpus() {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			wantPID, wantEnd, wantOK := regexpLastPartStart([]byte(in))
			pid, end, ok := lastPartStart([]byte(in))
			require.Equal(t, wantOK, ok, "%q", in)
			assert.Equal(t, wantPID, string(pid), "%q", in)
			assert.Equal(t, wantEnd, end, "%q", in)
		})
		if _, _, ok := regexpLastPartStart([]byte(in)); ok {
			found++
		} else {
			missed++
		}
	}
	assert.Greater(t, found, 100, "the corpus has part starts")
	assert.Greater(t, missed, 100, "and near misses")
}

func FuzzHeaderMatchersMatchTheirPatterns(f *testing.F) {
	for _, in := range headerCorpus() {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		assert.Equal(t, anyHeaderPattern.ReplaceAll(in, nil), Strip(in), "Strip(%q)", in)
		wantPID, wantEnd, wantOK := regexpLastPartStart(in)
		pid, end, ok := lastPartStart(in)
		if assert.Equal(t, wantOK, ok, "lastPartStart(%q)", in) && ok {
			assert.Equal(t, wantPID, string(pid), "lastPartStart(%q)", in)
			assert.Equal(t, wantEnd, end, "lastPartStart(%q)", in)
		}
	})
}
