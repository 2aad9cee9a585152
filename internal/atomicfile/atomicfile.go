// Package atomicfile writes files that readers see whole or not at all.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

var seq atomic.Uint64

// Write replaces path with data: a new file beside it, fsynced, renamed
// over the old one, and the directory fsynced so the rename survives a
// crash. A process killed at any moment leaves the old content or the new
// one, and at worst a stray "<name>.new.*" file. On a RAM-backed file
// system (tmpfs, as /run is) the fsyncs are left out: they do nothing there
// that the rename does not, and nothing there survives the machine.
//
// It uses plain system calls: every launch writes two files on its way to
// exec'ing QEMU, and the first calls of each kind in a fresh process cost
// tens of microseconds apiece.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	durable := !volatile(dir)
	tmp := path + ".new." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(seq.Add(1), 10) + "." +
		strconv.FormatInt(time.Now().UnixNano()&0xFFFFFF, 36)
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return &os.PathError{Op: "create", Path: tmp, Err: err}
	}
	fail := func(op string, err error) error {
		unix.Close(fd)
		unix.Unlink(tmp)
		return &os.PathError{Op: op, Path: tmp, Err: err}
	}
	// The umask may have narrowed the mode; the caller's mode is the one
	// readers rely on.
	if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
		return fail("chmod", err)
	}
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail("write", err)
		}
		b = b[n:]
	}
	if durable {
		if err := unix.Fsync(fd); err != nil {
			return fail("fsync", err)
		}
	}
	if err := unix.Close(fd); err != nil {
		unix.Unlink(tmp)
		return &os.PathError{Op: "close", Path: tmp, Err: err}
	}
	if err := unix.Rename(tmp, path); err != nil {
		unix.Unlink(tmp)
		return &os.LinkError{Op: "rename", Old: tmp, New: path, Err: err}
	}
	if !durable {
		return nil
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	if err := unix.Fsync(dfd); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// volatile reports whether dir is on a RAM-backed file system. The answer
// for the last directory asked about is kept: a launch writes its two
// files into one directory.
func volatile(dir string) bool {
	volatileCache.Lock()
	defer volatileCache.Unlock()
	if volatileCache.dir != dir {
		var st unix.Statfs_t
		volatileCache.dir = dir
		volatileCache.ram = unix.Statfs(dir, &st) == nil && (st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC)
	}
	return volatileCache.ram
}

var volatileCache struct {
	sync.Mutex
	dir string
	ram bool
}

// ReadSmall reads a whole regular file with plain system calls, for the
// small state files read on every launch. A short read is the end of the
// file, as it is for regular files, which saves a system call.
func ReadSmall(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		short := len(buf)+n < cap(buf)
		buf = buf[:len(buf)+n]
		if n == 0 || short {
			return buf, nil
		}
	}
}

// ReadNoFollow reads a small file as ReadSmall does, but refuses a
// symbolic link (the error wraps ELOOP), does not block on a FIFO, and
// stops with an error past limit bytes, so that a device or a file that
// grows without end cannot stall the reader.
func ReadNoFollow(path string, limit int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, min(4096, limit+1))
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return nil, &os.PathError{Op: "read", Path: path, Err: ErrTooLarge}
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):min(cap(buf), limit+1)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		short := len(buf)+n < min(cap(buf), limit+1)
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, &os.PathError{Op: "read", Path: path, Err: ErrTooLarge}
		}
		// A short read is the end of a regular file (see ReadSmall); of
		// a FIFO or device it is all there is for now, which is enough
		// to refuse it.
		if n == 0 || short {
			return buf, nil
		}
	}
}

// ReadFD reads fd until read(2) reports its end, but no more than limit+1
// bytes: a result longer than limit tells the caller the file is over its
// bound, whatever it may still hold. Unlike ReadSmall it does not take a
// short read for the end, which files in /proc (a page per read) and
// pipes need. The error is read(2)'s, for the caller to name the file.
func ReadFD(fd, limit int) ([]byte, error) {
	buf := make([]byte, 0, min(4096, limit+1))
	for len(buf) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):min(cap(buf), limit+1)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// ErrTooLarge is a file over the size its reader accepts.
var ErrTooLarge = errors.New("file is larger than expected")

// RemoveLeftovers removes the "<name>.new.<pid>.*" files of writers that
// died between creating and renaming them, and returns their names. A
// file whose writer still runs is left alone.
func RemoveLeftovers(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	var removed []string
	for _, n := range names {
		_, rest, ok := strings.Cut(n, ".new.")
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, ".")
		pid, perr := strconv.Atoi(pidText)
		if perr != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if unix.Unlink(filepath.Join(dir, n)) == nil {
			removed = append(removed, n)
		}
	}
	return removed, err
}
