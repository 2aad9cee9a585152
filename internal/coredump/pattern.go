package coredump

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Pattern is the kernel's core_pattern, with core_uses_pid.
type Pattern struct {
	Raw     string
	UsesPID bool
}

// Where a core goes, by the first character of core_pattern.
const (
	ToFile    = "file"
	ToHandler = "handler" // "|prog args": a pipe to a user-space handler
	ToSocket  = "socket"  // "@path" (Linux 6.16 and later)
	ToNowhere = "none"    // empty: the kernel writes no core
)

// ReadPattern reads core_pattern and core_uses_pid under procSys (normally
// /proc/sys).
func ReadPattern(procSys string) (Pattern, error) {
	b, err := os.ReadFile(filepath.Join(procSys, "kernel/core_pattern"))
	if err != nil {
		return Pattern{}, err
	}
	p := Pattern{Raw: strings.TrimRight(string(b), "\n")}
	if u, err := os.ReadFile(filepath.Join(procSys, "kernel/core_uses_pid")); err == nil {
		p.UsesPID = strings.TrimSpace(string(u)) != "0"
	}
	return p, nil
}

// Kind says where the kernel sends a core.
func (p Pattern) Kind() string {
	switch {
	case p.Raw == "":
		return ToNowhere
	case p.Raw[0] == '|':
		return ToHandler
	case p.Raw[0] == '@':
		return ToSocket
	}
	return ToFile
}

// Handler is the program a pipe pattern runs, or the socket a socket
// pattern names.
func (p Pattern) Handler() string {
	if k := p.Kind(); k != ToHandler && k != ToSocket {
		return ""
	}
	f := strings.Fields(strings.TrimLeft(p.Raw, "|@"))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// Facts are what the launcher knows about the crashed process for
// expanding a file pattern; the rest (thread ids, thread name, dump time,
// uid) becomes a wildcard, and the candidates are told apart by the pid
// recorded inside each core.
type Facts struct {
	PID      int
	Signal   int
	Hostname string
	// Exe is the executable's real path (for %E).
	Exe string
}

// Glob expands a file pattern the way the kernel's format_corename does,
// with every value the launcher cannot know as "*", into a filepath.Glob
// pattern. A relative result is relative to the crashed process's working
// directory, as the kernel resolves it.
func (p Pattern) Glob(f Facts) string {
	var b strings.Builder
	pidInPattern := false
	lit := func(s string) { b.WriteString(globEscape(s)) }
	// Names the kernel escapes: '/' becomes '!', and "", "." and ".." are
	// turned into harmless names.
	esc := func(s string) {
		switch s {
		case "":
			s = "!"
		case ".", "..":
			s = "!" + s[1:]
		}
		lit(strings.ReplaceAll(s, "/", "!"))
	}
	raw := p.Raw
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '%' {
			lit(string(c))
			continue
		}
		i++
		if i >= len(raw) {
			break // a lone trailing % is dropped
		}
		switch raw[i] {
		case '%':
			lit("%")
		case 'p':
			pidInPattern = true
			lit(strconv.Itoa(f.PID))
		case 'P':
			// The pid in the initial namespace: the launcher's view
			// unless it runs in a pid namespace of its own.
			lit(strconv.Itoa(f.PID))
		case 's':
			lit(strconv.Itoa(f.Signal))
		case 'h':
			if f.Hostname == "" {
				b.WriteString("*")
			} else {
				esc(f.Hostname)
			}
		case 'E':
			if f.Exe == "" {
				b.WriteString("*")
			} else {
				esc(f.Exe)
			}
		case 'i', 'I', 'u', 'g', 'd', 't', 'e', 'f', 'c', 'C':
			// Thread ids, ids, dump mode, time, thread name, file
			// name, limit, cgroup: not known here, or not reliably.
			b.WriteString("*")
		default:
			// The kernel drops an unknown specifier.
		}
	}
	if p.UsesPID && !pidInPattern {
		b.WriteString("." + strconv.Itoa(f.PID))
	}
	return b.String()
}

func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
