// Package printable renders text that came from a guest, a toolstack or
// QEMU so that it cannot act on a terminal or split a log line: control
// characters (newline, CR, ESC, the C1 set), Unicode format characters
// (bidirectional overrides) and bytes that are not UTF-8 are shown as
// escapes instead of being printed raw.
package printable

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String is s itself when every rune is safe to print on one line, and
// otherwise s Go-quoted ("web\n1" for a name holding a newline): the quotes
// say it was escaped, and the quoted form reads back to exactly s.
func String(s string) string {
	if safe(s, false) {
		return s
	}
	return strconv.Quote(s)
}

// Text keeps newlines and tabs of multi-line output and escapes every other
// unsafe rune in place: ESC becomes \x1b, an invalid byte \xff, U+202E
// \u202e.
func Text(s string) string {
	if safe(s, true) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x` + hex2(s[i]))
		case unsafeRune(r, true):
			if r < 0x100 {
				b.WriteString(`\x` + hex2(byte(r)))
			} else {
				q := strconv.QuoteRuneToASCII(r) // '\u202e'
				b.WriteString(q[1 : len(q)-1])
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

func safe(s string, multiline bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unsafeRune(r, multiline) {
			return false
		}
		i += size
	}
	return true
}

func unsafeRune(r rune, multiline bool) bool {
	if multiline && (r == '\n' || r == '\t') {
		return false
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}
