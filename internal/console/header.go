package console

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/shellquote"
)

// Header is a line the launcher writes into a console log: when a launch's
// part starts ("starts"), when the log was reopened after rotation
// ("continues after rotation"), and where bytes could not be written. The
// name is escaped: a guest's name cannot break the line. Anywhere but at
// the start of a file it is written after a newline of its own, so that it
// is on a line of its own whatever the guest wrote before, and Strip can
// give the guest's bytes back exactly.
//
//	=== dmlaunch 2026-12-02T15:04:05Z: domain 5 (web1), launcher pid 4242: console log starts ===
func Header(t time.Time, domid int, name string, launcherPID int, event string) string {
	if name == "" {
		name = "-"
	}
	return fmt.Sprintf("=== dmlaunch %s: domain %d (%s), launcher pid %d: %s ===\n",
		t.UTC().Format(time.RFC3339), domid, shellquote.Visible(name), launcherPID, event)
}

// The header lines are matched by hand rather than with package regexp:
// dmlaunch links this package, and compiling a pattern at start-up (or
// linking regexp at all) would cost every pass-through launch, which
// never reads a console log.
const (
	headerOpen  = "=== dmlaunch "
	headerClose = " ==="
)

// headerLineLen is the length, newline included, of the header line that
// b starts with (any line "=== dmlaunch ... ===\n"), or -1.
func headerLineLen(b []byte) int {
	if !bytes.HasPrefix(b, []byte(headerOpen)) {
		return -1
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < len(headerOpen)+len(headerClose) || !bytes.HasSuffix(b[:nl], []byte(headerClose)) {
		return -1
	}
	return nl + 1
}

// Strip returns a console log's content without the launcher's lines: the
// guest's bytes alone, in order. A header line goes with the newline
// before it, which the launcher wrote (one at the very start of the log
// has none).
func Strip(log []byte) []byte {
	var out []byte
	kept, i := 0, 0 // log[kept:i] is the guest's; i is where to look on
	if n := headerLineLen(log); n >= 0 {
		kept, i = n, n
	}
	for {
		nl := bytes.IndexByte(log[i:], '\n')
		if nl < 0 {
			break
		}
		at := i + nl
		if n := headerLineLen(log[at+1:]); n >= 0 {
			out = append(out, log[kept:at]...)
			kept, i = at+1+n, at+1+n
			continue
		}
		i = at + 1
	}
	return append(out, log[kept:]...)
}

// partStartPID parses line (without its newline) as a header that opens a
// launch's part of a file:
//
//	=== dmlaunch TIME: domain N (NAME), launcher pid PID: console log starts ===
//
// or "... console log continues after rotation ===", and returns PID's
// digits. Gap markers are not part starts: the bytes on both sides of one
// belong to the same launch.
func partStartPID(line []byte) ([]byte, bool) {
	// From the end: the event, the launcher's pid, and the name's end.
	rest, ok := bytes.CutSuffix(line, []byte(headerClose))
	if !ok {
		return nil, false
	}
	if r, ok := bytes.CutSuffix(rest, []byte("starts")); ok {
		rest = r
	} else if rest, ok = bytes.CutSuffix(rest, []byte("continues after rotation")); !ok {
		return nil, false
	}
	if rest, ok = bytes.CutSuffix(rest, []byte(": console log ")); !ok {
		return nil, false
	}
	digits := len(rest)
	for digits > 0 && isDigit(rest[digits-1]) {
		digits--
	}
	pid := rest[digits:]
	if len(pid) == 0 {
		return nil, false
	}
	if rest, ok = bytes.CutSuffix(rest[:digits], []byte("), launcher pid ")); !ok {
		return nil, false
	}
	// From the start: the time (no white space) and the domid.
	head, ok := bytes.CutPrefix(line, []byte(headerOpen))
	if !ok {
		return nil, false
	}
	space := bytes.IndexAny(head, " \t\n\f\r")
	if space < 2 || head[space-1] != ':' {
		return nil, false
	}
	head, ok = bytes.CutPrefix(head[space:], []byte(" domain "))
	if !ok {
		return nil, false
	}
	n := 0
	for n < len(head) && isDigit(head[n]) {
		n++
	}
	if n == 0 || !bytes.HasPrefix(head[n:], []byte(" (")) {
		return nil, false
	}
	// The name, any bytes but a newline, lies between the two parts,
	// which must not overlap.
	nameStart := len(line) - len(head) + n + len(" (")
	if nameStart > len(rest) {
		return nil, false
	}
	return pid, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// lastPartStart finds the last line of b that opens a launch's part, and
// returns the launcher pid's digits and the offset of the line's end (its
// newline, or the end of b). b's first and last lines count whole.
func lastPartStart(b []byte) (pid []byte, end int, ok bool) {
	end = len(b)
	for {
		start := bytes.LastIndexByte(b[:end], '\n') + 1
		if pid, ok := partStartPID(b[start:end]); ok {
			return pid, end, true
		}
		if start == 0 {
			return nil, 0, false
		}
		end = start - 1
	}
}

// maxHeaderScan bounds how far back LaunchTail looks for the header of the
// current part: a larger part simply is all the current launch's.
const maxHeaderScan = 64 << 20

// LaunchTail returns at most the last n bytes of the log that belong to the
// launch whose launcher has launcherPID: what follows the last header line
// in the file, and nothing when that header is another launcher's (a log the
// running launch has not written to yet).
func LaunchTail(path string, launcherPID int, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", shellquote.Visible(path))
	}
	return LaunchTailOf(f, fi.Size(), launcherPID, n)
}

// LaunchTailOf is LaunchTail on an open log, as it was when it held size
// bytes: a reader that goes on following the file from size sees no byte
// twice.
func LaunchTailOf(f io.ReaderAt, size int64, launcherPID int, n int64) ([]byte, error) {
	// Read backwards in chunks, each with a header's length of overlap,
	// until a part's header turns up.
	const chunk = 256 << 10
	const overlap = 512
	end := size
	for end > 0 && size-end < maxHeaderScan {
		start := max(end-chunk, 0)
		b := make([]byte, min(end+overlap, size)-start)
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			return nil, err
		}
		if digits, lineEnd, ok := lastPartStart(b); ok {
			pid, _ := strconv.Atoi(string(digits))
			if pid != launcherPID {
				return nil, nil
			}
			partFrom := start + int64(lineEnd) + 1 // after the header's newline
			from := min(max(partFrom, size-n), size)
			out := make([]byte, size-from)
			if _, err := f.ReadAt(out, from); err != nil && err != io.EOF {
				return nil, err
			}
			return out, nil
		}
		end = start
	}
	from := max(size-n, 0)
	out := make([]byte, size-from)
	if _, err := f.ReadAt(out, from); err != nil && err != io.EOF {
		return nil, err
	}
	return out, nil
}
