// Package console gives a guest's serial port to QEMU as a pty that the
// launcher reads from before QEMU starts, keeping every byte in a log, and
// publishes a second pty for people (screen, minicom, dmctl console).
//
// Two ptys, because a pty has one master: QEMU's side is read by the
// launcher, which copies each byte to the log and to the users' pty, and
// copies what users type back to QEMU.
//
// Every byte is accounted for: a byte is either in the log or counted as
// not kept, and a failing log is reported once per failure, not per write.
// Each launch's part of a log begins with a header line (see Header), so
// launches that reuse a domid stay apart, and the log survives rotation:
// before writing, at most once a second, the relay checks that its path
// still names the file it holds, and reopens it when it does not.
package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/creack/pty"
	"github.com/dmlaunch/dmlaunch/internal/shellquote"
	"github.com/dmlaunch/dmlaunch/internal/term"
)

// LogMode is the console log's mode when the relay creates it.
const LogMode = 0o640

// ReopenCheckInterval is how often, at most, the relay checks whether its
// log was rotated away. Bytes written in between go to the rotated file:
// kept, as long as it is not compressed at once (logrotate's delaycompress).
const ReopenCheckInterval = time.Second

// reopenCheckInterval is ReopenCheckInterval; tests shorten it.
var reopenCheckInterval = ReopenCheckInterval

// Launch identifies the launch whose console this is, for the header lines
// and for what the relay reports.
type Launch struct {
	Domid       int
	Name        string
	LauncherPID int
	// Logf reports trouble with the log, to the toolstack's log.
	Logf func(format string, a ...any)
}

// Console is a running relay.
type Console struct {
	// QEMUPath is the pty QEMU's serial port opens.
	QEMUPath string
	// UserPath is the pty people open.
	UserPath string
	LogPath  string

	launch                Launch
	qemuMaster, qemuSlave *os.File
	userMaster, userSlave *os.File
	toUser                chan []byte
	done                  chan struct{}
	firstByte             chan struct{}
	firstOnce             sync.Once

	// Owned by fromQEMU while it runs; read under mu.
	mu        sync.Mutex
	log       *os.File
	lastCheck time.Time
	kept      int64 // guest bytes written to the log
	lost      int64 // guest bytes that could not be written
	lostNow   int64 // bytes lost in the current failure, 0 when writing
	lastErr   error // the first error of the latest failure
	reopens   int
	keptHere  int64 // guest bytes in the current file since it was opened
	// reopenFailing silences the report of a failed reopen until one
	// succeeds: the check runs every second.
	reopenFailing bool
}

// Open creates both ptys and opens the log (appending, with a header line),
// and starts copying.
func Open(logPath string, launch Launch) (*Console, error) {
	if launch.Logf == nil {
		launch.Logf = func(string, ...any) {}
	}
	c := &Console{LogPath: logPath, launch: launch, toUser: make(chan []byte, 256), done: make(chan struct{}), firstByte: make(chan struct{})}
	var err error
	if c.log, err = c.openLog("console log starts"); err != nil {
		return nil, err
	}
	c.lastCheck = time.Now()
	if c.qemuMaster, c.qemuSlave, err = pty.Open(); err != nil {
		c.log.Close()
		return nil, err
	}
	if c.userMaster, c.userSlave, err = pty.Open(); err != nil {
		c.log.Close()
		c.qemuMaster.Close()
		c.qemuSlave.Close()
		return nil, err
	}
	// Raw on both slaves: no echo, no CR/LF translation, before anyone
	// (QEMU, a terminal program) sets its own modes. The launcher keeps
	// each slave open so the masters never see EIO between users.
	for _, s := range []*os.File{c.qemuSlave, c.userSlave} {
		if _, err := term.MakeRaw(int(s.Fd())); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.QEMUPath, c.UserPath = c.qemuSlave.Name(), c.userSlave.Name()
	go c.fromQEMU()
	go c.toUsers()
	go c.fromUsers()
	return c, nil
}

// openLog opens the log for appending and writes the header line that
// starts this launch's part of it. A header that cannot be written (a full
// disk) is not fatal: the bytes after it are counted either way.
func (c *Console) openLog(event string) (*os.File, error) {
	f, err := os.OpenFile(c.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, LogMode)
	if err != nil {
		return nil, err
	}
	h := Header(time.Now(), c.launch.Domid, c.launch.Name, c.launch.LauncherPID, event)
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		h = "\n" + h
	}
	_, _ = f.WriteString(h)
	return f, nil
}

// fromQEMU copies every byte QEMU writes into the log, then offers it to
// the users' pty. The log write is first and unconditional: nobody being
// attached must not cost a byte.
func (c *Console) fromQEMU() {
	defer close(c.done)
	defer close(c.toUser)
	buf := make([]byte, 32*1024)
	for {
		n, err := c.qemuMaster.Read(buf)
		if n > 0 {
			c.firstOnce.Do(func() { close(c.firstByte) })
			c.keep(buf[:n])
			chunk := append([]byte(nil), buf[:n]...)
			select {
			case c.toUser <- chunk:
			default: // nobody reads the users' pty: it is in the log
			}
		}
		if err != nil {
			return // EIO once QEMU and our slave are closed
		}
	}
}

// keep writes one chunk to the log and accounts for every byte of it.
func (c *Console) keep(chunk []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.lastCheck) >= reopenCheckInterval {
		c.lastCheck = now
		c.reopenIfRotated()
	}
	if c.lostNow > 0 {
		// Writing failed before: say where the gap is, in the log
		// itself, before the bytes that follow it.
		mark := Header(time.Now(), c.launch.Domid, c.launch.Name, c.launch.LauncherPID,
			fmt.Sprintf("%d console bytes lost here (%s)", c.lostNow, reason(c.lastErr)))
		if _, err := c.log.WriteString("\n" + mark); err != nil {
			c.lost += int64(len(chunk))
			c.lostNow += int64(len(chunk))
			return
		}
		c.launch.Logf("console log %s is written again; %d console bytes were lost (%s)",
			shellquote.Visible(c.LogPath), c.lostNow, reason(c.lastErr))
		c.lostNow = 0
	}
	n, err := c.log.Write(chunk)
	c.kept += int64(n)
	c.keptHere += int64(n)
	if err != nil {
		missed := int64(len(chunk) - n)
		c.lost += missed
		if c.lostNow == 0 {
			c.lastErr = err
			c.launch.Logf("console log %s: %s; console bytes are being lost (counted, and reported when QEMU exits)",
				shellquote.Visible(c.LogPath), reason(err))
		}
		c.lostNow += missed
	}
}

// reason is an error without the path that every message already names.
func reason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return fmt.Sprint(err)
}

// reopenIfRotated reopens the log when its path no longer names the file
// the relay holds (renamed or removed by logrotate). A failed reopen keeps
// the old file: its bytes are kept, in the rotated file.
func (c *Console) reopenIfRotated() {
	held, err := c.log.Stat()
	if err != nil {
		return
	}
	if now, err := os.Stat(c.LogPath); err == nil && os.SameFile(held, now) {
		return
	}
	f, err := c.openLog("console log continues after rotation")
	if err != nil {
		if !c.reopenFailing {
			c.launch.Logf("console log %s was rotated and cannot be reopened (%s); still writing to the rotated file",
				shellquote.Visible(c.LogPath), reason(err))
		}
		c.reopenFailing = true
		return
	}
	if c.reopenFailing {
		c.launch.Logf("console log %s reopened", shellquote.Visible(c.LogPath))
		c.reopenFailing = false
	}
	c.log.Close()
	c.log = f
	c.reopens++
	c.keptHere = 0
}

func (c *Console) toUsers() {
	for chunk := range c.toUser {
		if _, err := c.userMaster.Write(chunk); err != nil {
			return
		}
	}
}

func (c *Console) fromUsers() {
	_, _ = io.Copy(c.qemuMaster, c.userMaster)
}

// FirstByte is closed when the guest writes its first byte.
func (c *Console) FirstByte() <-chan struct{} { return c.firstByte }

// Logged is the number of the guest's bytes written to the log so far.
func (c *Console) Logged() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kept
}

// Lost is the number of the guest's bytes that could not be written to the
// log, and the error that started the latest failure.
func (c *Console) Lost() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost, c.lastErr
}

// Summary accounts for every console byte in one phrase, for the line the
// launcher writes when QEMU exits: "N console bytes in PATH", then what was
// lost and what went to rotated files.
func (c *Console) Summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := fmt.Sprintf("%d console bytes in %s", c.kept, shellquote.Visible(c.LogPath))
	if c.reopens > 0 {
		s += fmt.Sprintf(" (%d since it was reopened after rotation, %d in rotated files)", c.keptHere, c.kept-c.keptHere)
	}
	if c.lost > 0 {
		s += fmt.Sprintf(", %d not kept (%s)", c.lost, reason(c.lastErr))
	}
	return s
}

// Drain waits, once QEMU has exited, for the last bytes to reach the log:
// closing the launcher's own slave lets the master report EIO after the
// buffer is read.
func (c *Console) Drain() {
	c.qemuSlave.Close()
	<-c.done
}

// Close stops the relay and closes everything. After Drain it only
// releases the files.
func (c *Console) Close() error {
	for _, f := range []*os.File{c.qemuSlave, c.userSlave, c.userMaster, c.qemuMaster} {
		if f != nil {
			f.Close()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.Close()
}
