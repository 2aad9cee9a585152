// Package shellquote renders words so a shell reads them back unchanged:
// a logged command line can be pasted into a terminal. Every rendering is
// one line of visible characters, whatever the words hold.
package shellquote

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

func safe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("@%+=:,./-_", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// hidden reports whether r must not reach a log or a terminal as it is:
// control characters (a newline would split the log line, an ESC
// sequence would rewrite the terminal), and characters that are invisible
// or reorder the text around them (U+202E and the other bidirectional
// controls, line and paragraph separators).
func hidden(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r < 0x80:
		return false
	}
	return unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// needsEscape reports whether s holds a hidden character or a byte that
// is not UTF-8.
func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || hidden(r) {
			return true
		}
		i += n
	}
	return false
}

const hexDigits = "0123456789abcdef"

// escape writes s with every hidden character and invalid byte as \xHH
// (its UTF-8 bytes, so the result does not depend on the locale), \n, \t
// or \r, and each of the extra characters preceded by a backslash.
func escape(b *strings.Builder, s, extra string) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\\' || strings.ContainsRune(extra, r):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == utf8.RuneError && n == 1, hidden(r):
			for _, c := range []byte(s[i : i+n]) {
				b.WriteString(`\x`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
}

// Word quotes one word: as it is when only safe characters, in single
// quotes otherwise, and in $'...' form (read by bash, zsh, ksh, busybox sh
// and POSIX.1-2024 shells, as GNU ls --quoting-style=shell-escape writes
// it) when it holds control characters, invisible or reordering
// characters, or bytes that are not UTF-8: those would break the line or
// hide from the reader.
func Word(s string) string {
	if safe(s) {
		return s
	}
	if !needsEscape(s) {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString("$'")
	escape(&b, s, "'")
	b.WriteByte('\'')
	return b.String()
}

// Join quotes every word and joins them with spaces.
func Join(words []string) string {
	var b strings.Builder
	n := len(words)
	for _, w := range words {
		n += len(w) + 2
	}
	b.Grow(n)
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Word(w))
	}
	return b.String()
}

// Visible returns s for a one-line message: unchanged when it holds
// nothing hidden, otherwise with each hidden character or invalid byte
// written as \n, \t, \r or \xHH, and backslashes doubled.
func Visible(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	escape(&b, s, "")
	return b.String()
}
