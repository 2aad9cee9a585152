package shellquote

import (
	"os/exec"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWord(t *testing.T) {
	tests := map[string]string{
		"plain":             "plain",
		"/usr/libexec/qemu": "/usr/libexec/qemu",
		"file=a,b:c@d%e+f":  "file=a,b:c@d%e+f",
		"":                  "''",
		"two words":         "'two words'",
		"it's":              `'it'\''s'`,
		"$(reboot)":         "'$(reboot)'",
		"a;b&c|d>e<f*g?h~":  "'a;b&c|d>e<f*g?h~'",
		"ünïcode wide 名前":   "'ünïcode wide 名前'",
		"a\\b":              `'a\b'`,
		"new\nline":         `$'new\nline'`,
		"tab\tcr\r":         `$'tab\tcr\r'`,
		"esc\x1b[2Jit's":    `$'esc\x1b[2Jit\'s'`,
		"back\\slash\n":     `$'back\\slash\n'`,
		"del\x7f":           `$'del\x7f'`,
		"c1 \u009b":         `$'c1 \xc2\x9b'`,
		"bidi \u202etxt":    `$'bidi \xe2\x80\xaetxt'`,
		"bad \xff byte":     `$'bad \xff byte'`,
	}
	for in, want := range tests {
		assert.Equal(t, want, Word(in), "%q", in)
	}
}

func TestVisible(t *testing.T) {
	tests := map[string]string{
		"web 1":         "web 1",
		`a\b`:           `a\b`,
		"evil\nname":    `evil\nname`,
		"esc\x1b[31m\\": `esc\x1b[31m\\`,
		"bidi \u2066x":  `bidi \xe2\x81\xa6x`,
		"wide 名前, ünï":  "wide 名前, ünï",
	}
	for in, want := range tests {
		assert.Equal(t, want, Visible(in), "%q", in)
	}
}

// hostile are words a guest name or a toolstack argument might hold.
var hostile = []string{
	"-name", "guest 'one' \"two\"", "", "$HOME", "`id`", "a\\b", "tab\there", "new\nline", "ünïcode 名前",
	"-", "--", "esc\x1b]0;title\x07", "cr\rover", "\x01\x02\x1f\x7f", "c1\u0085\u009b", "rtl\u202eevil",
	"bad\xff\xfeutf8", "\\x41 not an escape", "it's $'x'", "trailing newline\n\n",
}

// roundTrip has shell read the words back from Join's output.
func roundTrip(t *testing.T, shell string, words []string) []string {
	t.Helper()
	line := Join(words)
	out, err := exec.Command(shell, "-c", `for w in `+line+`; do printf '%s\0' "$w"; done`).Output()
	require.NoError(t, err, "%s -c %s", shell, line)
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// The point of quoting: the shell reads the words back unchanged, and the
// line stays one line of visible characters.
func TestJoinRoundTripsThroughBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	assert.Equal(t, hostile, roundTrip(t, bash, hostile))
	for _, r := range Join(hostile) {
		assert.False(t, unicode.IsControl(r) || hidden(r), "%U reaches the line as it is", r)
	}
}

// Words without hidden characters need only single quotes, which every
// POSIX sh (dash included) reads.
func TestJoinRoundTripsThroughSh(t *testing.T) {
	var plain []string
	for _, w := range hostile {
		if !needsEscape(w) {
			plain = append(plain, w)
		}
	}
	require.NotEmpty(t, plain)
	assert.Equal(t, plain, roundTrip(t, "sh", plain))
}

func BenchmarkJoin(b *testing.B) {
	words := strings.Fields("/usr/libexec/xen-qemu-system-i386 -xen-domid 5 -no-shutdown -chardev socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-5,server=on,wait=off -mon chardev=libxl-cmd,mode=control -nodefaults -no-user-config -name")
	words = append(words, "guest with spaces", "-machine", "xenfv,suppress-vmdesc=on")
	b.ReportAllocs()
	for b.Loop() {
		_ = Join(words)
	}
}
