package main

import (
	"io"
	"strings"

	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/mattn/go-runewidth"
)

// table prints columns that hold whatever the cells contain: every cell
// is escaped (see cell) and padded by its width on a terminal, so a tab, a
// newline or a wide character in a guest's name cannot shift the columns
// or start a line of its own. (text/tabwriter counts runes, and takes a
// tab in a cell for a column break.)
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	t.rows = append(t.rows, cells)
}

func (t *table) write(w io.Writer) error {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], runewidth.StringWidth(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-runewidth.StringWidth(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell escapes what a terminal would act on rather than show, as every
// one-line message of dmlaunch does (shellquote.Visible): C0 and C1
// controls, Unicode format characters such as the bidirectional overrides,
// line separators, and bytes that are not UTF-8.
func cell(s string) string { return shellquote.Visible(s) }
