// Package coredump keeps the evidence of a crashed QEMU: it raises the core
// size limit before QEMU starts, and after QEMU died of a core-dumping
// signal it finds the core the kernel wrote (resolving core_pattern the way
// the kernel did), names it by domain, guest and time, records the crash
// beside the console log and takes a bounded backtrace of every thread.
package coredump

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Unlimited is RLIMIT_CORE's "no limit".
const Unlimited = uint64(unix.RLIM_INFINITY)

// Limit is a core size limit in bytes; Unlimited keeps cores whole and 0
// turns them off.
type Limit uint64

// ParseLimit reads "unlimited", a byte count, or a count with a K, M or G
// suffix (powers of 1024).
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unlimited") || strings.EqualFold(s, "infinity") {
		return Limit(Unlimited), nil
	}
	mult := uint64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > Unlimited/mult {
		return 0, errors.New("is not a size: use unlimited, 0, or a size such as 512M")
	}
	return Limit(n * mult), nil
}

func (l Limit) String() string {
	switch {
	case uint64(l) == Unlimited:
		return "unlimited"
	case l != 0 && l%(1<<30) == 0:
		return strconv.FormatUint(uint64(l)>>30, 10) + "G"
	case l != 0 && l%(1<<20) == 0:
		return strconv.FormatUint(uint64(l)>>20, 10) + "M"
	case l != 0 && l%(1<<10) == 0:
		return strconv.FormatUint(uint64(l)>>10, 10) + "K"
	}
	return strconv.FormatUint(uint64(l), 10)
}

// CappedError says the limit asked for is above the hard limit this
// process may not raise: the soft limit was set to the hard one instead.
type CappedError struct{ Want, Got Limit }

func (e *CappedError) Error() string {
	return fmt.Sprintf("core size limit %s asked for, but the hard limit is %s and only root may raise it; cores above %s are cut short",
		e.Want, e.Got, e.Got)
}

// Apply sets this process's RLIMIT_CORE, which a child started or exec'd
// afterwards inherits. The soft limit is what the kernel truncates a core
// file at; raising it up to the hard limit needs no privilege. Above the
// hard limit both are raised, which needs CAP_SYS_RESOURCE; without it the
// soft limit goes to the hard one and a *CappedError says so.
func (l Limit) Apply() (Limit, error) {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &cur); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_CORE): %w", err)
	}
	want := uint64(l)
	if want <= cur.Max {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: want, Max: cur.Max}); err != nil {
			return 0, fmt.Errorf("setrlimit(RLIMIT_CORE): %w", err)
		}
		return l, nil
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: want, Max: want}); err == nil {
		return l, nil
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: cur.Max, Max: cur.Max}); err != nil {
		return 0, fmt.Errorf("setrlimit(RLIMIT_CORE): %w", err)
	}
	return Limit(cur.Max), &CappedError{Want: l, Got: Limit(cur.Max)}
}

// Current is this process's soft RLIMIT_CORE.
func Current() Limit {
	var cur unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_CORE, &cur) != nil {
		return 0
	}
	return Limit(cur.Cur)
}

// Keep returns a function that puts this process's RLIMIT_CORE back as it
// is now: the launcher raises the limit for QEMU alone, and the helpers it
// starts later (gdbserver, strace, gdb) keep the toolstack's.
func Keep() (restore func() error) {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &cur); err != nil {
		return func() error { return err }
	}
	return func() error { return unix.Setrlimit(unix.RLIMIT_CORE, &cur) }
}
