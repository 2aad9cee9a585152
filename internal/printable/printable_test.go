package printable

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"web1", "web1"},
		{"web 1", "web 1"},
		{"café ☕", "café ☕"},
		{"", ""},
		{"a\nb", `"a\nb"`},
		{"a\rb", `"a\rb"`},
		{"\x1b[31mred", `"\x1b[31mred"`},
		{"tab\there", `"tab\there"`},
		{"\u202egnp.exe", `"\u202egnp.exe"`},
		{"bad\xffbyte", `"bad\xffbyte"`},
		{"c1\u009bx", `"c1\u009bx"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := String(tt.in)
			assert.Equal(t, tt.want, got)
			if got != tt.in {
				back, err := strconv.Unquote(got)
				require.NoError(t, err)
				assert.Equal(t, tt.in, back, "the quoted form reads back exactly")
			}
		})
	}
}

func TestText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"VM status: running\n", "VM status: running\n"},
		{"a\tb\nc\n", "a\tb\nc\n"},
		{"name \x1b]0;owned\x07\n", `name \x1b]0;owned\x07` + "\n"},
		{"cr\rhere", `cr\x0dhere`},
		{"\u202eevil", `\u202eevil`},
		{"bad\xff", `bad\xff`},
		{"del\x7f", `del\x7f`},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			assert.Equal(t, tt.want, Text(tt.in))
		})
	}
}
