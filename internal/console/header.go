package console

import (
	"fmt"
	"io"
	"os"
	"regexp"
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

var anyHeader = regexp.MustCompile(`(?:\A|\n)=== dmlaunch [^\n]* ===\n`)

// Strip returns a console log's content without the launcher's lines: the
// guest's bytes alone, in order.
func Strip(log []byte) []byte {
	return anyHeader.ReplaceAll(log, nil)
}

// A header that opens a launch's part of a file. Gap markers are not: the
// bytes on both sides of one belong to the same launch.
var partStart = regexp.MustCompile(`(?m)^=== dmlaunch \S+: domain \d+ \(.*\), launcher pid (\d+): console log (starts|continues after rotation) ===$`)

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
		if locs := partStart.FindAllSubmatchIndex(b, -1); locs != nil {
			last := locs[len(locs)-1]
			pid, _ := strconv.Atoi(string(b[last[2]:last[3]]))
			if pid != launcherPID {
				return nil, nil
			}
			partFrom := start + int64(last[1]) + 1 // after the header's newline
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
