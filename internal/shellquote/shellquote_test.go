package shellquote

import (
	"os/exec"
	"strings"
	"testing"

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
	}
	for in, want := range tests {
		assert.Equal(t, want, Word(in), "%q", in)
	}
}

// The point of quoting: sh reads the words back unchanged.
func TestJoinRoundTripsThroughSh(t *testing.T) {
	words := []string{"-name", "guest 'one' \"two\"", "", "$HOME", "`id`", "a\\b", "tab\there", "new\nline", "ünïcode", "-", "--"}
	out, err := exec.Command("sh", "-c", `for w in `+Join(words)+`; do printf '%s\0' "$w"; done`).Output()
	require.NoError(t, err)
	assert.Equal(t, words, strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"))
}
