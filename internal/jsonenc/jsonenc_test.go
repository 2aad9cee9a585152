package jsonenc

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendStringReadsBackAsEncodingJSONDoes(t *testing.T) {
	for name, s := range map[string]string{
		"plain":         "hvm1",
		"quote, slash":  `a"b\c`,
		"controls":      "a\nb\tc\x1b[31m\x00",
		"DEL":           "a\x7fb",
		"unicode":       "gäst ✓",
		"invalid UTF-8": "a\xffb",
		"empty":         "",
	} {
		t.Run(name, func(t *testing.T) {
			b := AppendString(nil, s)
			var got string
			require.NoError(t, json.Unmarshal(b, &got), "%s", b)
			want, err := json.Marshal(s)
			require.NoError(t, err)
			var wantS string
			require.NoError(t, json.Unmarshal(want, &wantS))
			assert.Equal(t, wantS, got)
			for _, c := range b {
				assert.False(t, c < 0x20 || c == 0x7f, "raw control byte %#x in %q", c, b)
			}
		})
	}
}

func TestAppendField(t *testing.T) {
	assert.Equal(t, `,"name":"web\u000a1"`, string(AppendField(nil, "name", "web\n1")))
}
