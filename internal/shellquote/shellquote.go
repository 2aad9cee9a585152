// Package shellquote renders words so a POSIX shell reads them back
// unchanged: a logged command line can be pasted into a terminal.
package shellquote

import "strings"

func safe(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("@%+=:,./-_", c):
		default:
			return false
		}
	}
	return true
}

// Word quotes one word.
func Word(s string) string {
	if safe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
