package launcher

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/dmlaunch/dmlaunch/gdbwrap"
	"github.com/dmlaunch/dmlaunch/internal/statedir"
	"golang.org/x/sys/unix"
)

// DryRunChecks makes the checks of the machine that the launch itself
// would make, changing nothing that lasts: the state directory can hold
// the lease and the record, the console log directory can be written, the
// debug port is free. Prepare has made every other check. A backend
// passes through whatever these say, so it has none.
func (p *Plan) DryRunChecks() error {
	if p.Backend {
		return nil
	}
	if err := statedir.Check(p.Config.StateDir); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := writableDir(p.Config.StateDir); err != nil {
		return err
	}
	if p.Mode == ModePassThrough {
		return nil
	}
	if err := writableDir(p.Config.LogDir); err != nil {
		return err
	}
	if p.DebugAddr != "" && !p.Config.GDBUnix {
		addr, err := gdbwrap.Address(p.Config.GDBListen, p.Domid)
		if err != nil {
			return err
		}
		l, err := gdbwrap.Listen(addr)
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}

// writableDir tells whether files can be made in dir, or dir itself
// created: the nearest existing directory at or above it must be a
// directory, writable, on a file system with room. Errors are
// *os.PathError, as the launch's own would be.
func writableDir(dir string) error {
	at := dir
	for {
		var st unix.Stat_t
		err := unix.Stat(at, &st)
		if err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return &os.PathError{Op: "mkdir", Path: at, Err: unix.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, unix.ENOENT) || at == "/" {
			return &os.PathError{Op: "stat", Path: at, Err: err}
		}
		at = filepath.Dir(at)
	}
	if err := unix.Access(at, unix.W_OK|unix.X_OK); err != nil {
		return &os.PathError{Op: "access", Path: at, Err: err}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(at, &fs); err == nil && fs.Blocks > 0 && (fs.Bavail == 0 || fs.Files > 0 && fs.Ffree == 0) {
		return &os.PathError{Op: "statfs", Path: at, Err: unix.ENOSPC}
	}
	return nil
}
