// Package jsonenc appends JSON strings to a byte slice. The launcher writes
// its records (registry, crash) with it instead of encoding/json, whose
// reflection and start-up cost every short-lived launch would pay; readers
// (dmctl) decode them with encoding/json.
package jsonenc

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// AppendField appends `,"key":` and value as a JSON string.
func AppendField(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return AppendString(b, value)
}

// AppendString quotes s as a JSON string. Control characters and DEL are
// escaped, so a record printed raw cannot drive a terminal; invalid UTF-8
// becomes U+FFFD, as encoding/json does.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
