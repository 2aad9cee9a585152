package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"golang.org/x/sys/unix"
)

// MaxSize bounds a record: argv and the paths of one launch fit many
// times over (the kernel caps a command line at 2 MiB), and a file that
// grows without end (a device, a runaway writer) is refused at this size.
const MaxSize = 4 << 20

// BadRecordError is a record file that cannot be trusted or read. Readers
// report it by name and go on with the others.
type BadRecordError struct {
	Path   string
	Reason string
}

func (e *BadRecordError) Error() string {
	return fmt.Sprintf("registry record %s %s", e.Path, e.Reason)
}

// ParseName tells whether a directory entry is a record, and of which
// domid: "<domid>.json" or "<domid>-qdisk.json" (FileName's names).
func ParseName(name string) (domid int, qdisk, ok bool) {
	stem, found := strings.CutSuffix(name, ".json")
	if !found {
		return 0, false, false
	}
	stem, qdisk = strings.CutSuffix(stem, "-qdisk")
	if stem == "" || len(stem) > 5 || strings.TrimLeft(stem, "0123456789") != "" {
		return 0, false, false
	}
	d, err := strconv.Atoi(stem)
	return d, qdisk, err == nil
}

// ReadFile reads a record file without following a symbolic link and
// without blocking on a FIFO or a device: only a regular file of at most
// MaxSize bytes, owned by owner (the state directory's owner, the user
// dmlaunch runs as) and writable by nobody else, is read. Anything else
// is a *BadRecordError; a missing file is os.ErrNotExist.
func ReadFile(path string, owner int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ELOOP:
		return nil, &BadRecordError{path, "is a symbolic link; dmlaunch writes records itself, remove it"}
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, &BadRecordError{path, "is not a regular file; remove it"}
	case owner >= 0 && int(st.Uid) != owner:
		return nil, &BadRecordError{path, fmt.Sprintf("is owned by uid %d, not by uid %d that owns the state directory; dmlaunch did not write it, remove it", st.Uid, owner)}
	case st.Mode&0o022 != 0:
		return nil, &BadRecordError{path, fmt.Sprintf("has mode %04o, writable by others; remove it", st.Mode&0o777)}
	case st.Size > MaxSize:
		return nil, &BadRecordError{path, fmt.Sprintf("is %d bytes, over the %d-byte limit; remove it", st.Size, MaxSize)}
	}
	// Read one byte past the limit, whatever fstat said: the file may be
	// growing.
	buf := make([]byte, 0, st.Size+1)
	for len(buf) <= MaxSize {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):min(cap(buf), MaxSize+1)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		short := len(buf)+n < min(cap(buf), MaxSize+1)
		buf = buf[:len(buf)+n]
		if n == 0 || short {
			return buf, nil // a short read is the end of a regular file
		}
	}
	return nil, &BadRecordError{path, fmt.Sprintf("grew past the %d-byte limit while read; remove it", MaxSize)}
}

// Domids lists the domids that have records in dir, from the names alone:
// one read of the directory, with plain system calls (the allocator calls
// it on every allocation). A directory that cannot be read has none.
func Domids(dir string) map[int]bool {
	out := map[int]bool{}
	eachRecord(dir, func(_ string, d int) { out[d] = true })
	return out
}

// eachRecord calls fn with the name and domid of every record file in
// dir, read with getdents(2) alone; a directory that cannot be read has
// none.
func eachRecord(dir string, fn func(name string, domid int)) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			if d, _, ok := ParseName(name); ok {
				fn(name, d)
			}
		}
	}
}

// Owner is the uid that owns dir, whose records are trusted.
func Owner(dir string) (int, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return -1, &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	return int(st.Uid), nil
}

// Summary is what the lease allocator and a launch's sweep need of a
// record: whose launch it is, and whether that launch still runs (Follow).
type Summary struct {
	Path     string
	Domid    int
	Qdisk    bool
	Kind     string
	Name     string
	Mode     string
	Launcher proc.Identity
	PIDFile  string
	// rawArgv is the record's argv as JSON text, decoded only to check
	// a daemonized QEMU's command line (Follow).
	rawArgv []byte
}

// ReadSummary reads one record's summary; see ReadFile for what is
// refused. A record that does not parse, or whose domid is not the one in
// its name, is a *BadRecordError.
func ReadSummary(path string, owner int) (Summary, error) {
	domid, qdisk, ok := ParseName(filepath.Base(path))
	if !ok {
		return Summary{}, &BadRecordError{path, "is not named <domid>.json"}
	}
	b, err := ReadFile(path, owner)
	if err != nil {
		return Summary{}, err
	}
	s, err := ParseSummary(b)
	if err != nil {
		return s, &BadRecordError{path, "is damaged (" + err.Error() + "); remove it"}
	}
	if s.Domid != domid {
		return s, &BadRecordError{path, fmt.Sprintf("names domain %d; remove it", s.Domid)}
	}
	s.Path, s.Qdisk = path, qdisk
	return s, nil
}

// Summaries reads every record in dir. Records that cannot be read are
// returned as errors beside the others; a missing directory has none.
func Summaries(dir string) ([]Summary, []error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	var bad []error
	if err != nil {
		bad = append(bad, err)
	}
	owner, err := Owner(dir)
	if err != nil {
		return nil, append(bad, err)
	}
	var out []Summary
	for _, n := range names {
		if _, _, ok := ParseName(n); !ok {
			continue
		}
		s, err := ReadSummary(filepath.Join(dir, n), owner)
		switch {
		case errors.Is(err, os.ErrNotExist): // removed while we read
		case err != nil:
			bad = append(bad, err)
		default:
			out = append(out, s)
		}
	}
	return out, bad
}

// RemoveIfUnchanged removes a record only while it still holds data: a
// launch may have replaced it since it was read. Writers replace a record
// by renaming a new file onto its name, and some (backends) do so outside
// the lease lock, so a read, a compare and an unlink could remove a record
// renamed in between. Instead the record is first renamed to a private
// name in the same directory, which takes exactly one file out of the
// writers' way; that file is removed only if it holds data. Otherwise it
// is a newer record and goes back under its name, unless a still newer
// one already sits there (then the one taken aside is older and is
// dropped). Readers may miss a record for that moment; none is lost.
func RemoveIfUnchanged(path string, data []byte, owner int) (bool, error) {
	cur, err := ReadFile(path, owner)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if string(cur) != string(data) {
		return false, nil
	}
	aside := asideName(path)
	if err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, aside, unix.RENAME_NOREPLACE); err != nil {
		if err == unix.ENOENT {
			return false, nil // removed meanwhile
		}
		return false, &os.LinkError{Op: "rename", Old: path, New: aside, Err: err}
	}
	taken, err := ReadFile(aside, owner)
	if err == nil && string(taken) == string(data) {
		if err := unix.Unlink(aside); err != nil && err != unix.ENOENT {
			return false, &os.PathError{Op: "unlink", Path: aside, Err: err}
		}
		return true, nil
	}
	return false, putBack(aside, path)
}

// putBack returns a record taken aside to its name, without replacing a
// record written there since: that one is newer, and the one taken aside
// is dropped.
func putBack(aside, path string) error {
	err := unix.Renameat2(unix.AT_FDCWD, aside, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// A file system without RENAME_NOREPLACE: link(2) does not
		// replace either.
		if err = unix.Link(aside, path); err == nil || err == unix.EEXIST {
			unix.Unlink(aside)
		}
	}
	switch err {
	case nil:
		return nil
	case unix.EEXIST:
		unix.Unlink(aside)
		return nil
	}
	return &os.LinkError{Op: "put back", Old: aside, New: path, Err: err}
}

// asideSeq tells apart the names one process takes records aside to.
var asideSeq atomic.Uint64

// asideName is a private name for a record taken aside: not a record's
// name (readers skip it), unique to this process and call, and in
// atomicfile's "<name>.new.<pid>.*" form, so that dmctl prune removes it
// should this process die before it is put back or removed.
func asideName(path string) string {
	return path + ".new." + strconv.Itoa(os.Getpid()) + ".aside." + strconv.FormatUint(asideSeq.Add(1), 10)
}
