// Package console gives a guest's serial port to QEMU as a pty that the
// launcher reads from before QEMU starts, keeping every byte in a log, and
// publishes a second pty for people (screen, minicom, dmctl console).
//
// Two ptys, because a pty has one master: QEMU's side is read by the
// launcher, which copies each byte to the log and to the users' pty, and
// copies what users type back to QEMU.
package console

import (
	"io"
	"os"
	"sync"

	"github.com/creack/pty"
	"github.com/dmlaunch/dmlaunch/internal/term"
)

// Console is a running relay.
type Console struct {
	// QEMUPath is the pty QEMU's serial port opens.
	QEMUPath string
	// UserPath is the pty people open.
	UserPath string
	LogPath  string

	qemuMaster, qemuSlave *os.File
	userMaster, userSlave *os.File
	log                   *os.File
	toUser                chan []byte
	done                  chan struct{}
	mu                    sync.Mutex
	logged                int64
	firstByte             chan struct{}
	firstOnce             sync.Once
}

// Open creates both ptys and the log (appending), and starts copying.
func Open(logPath string) (*Console, error) {
	c := &Console{LogPath: logPath, toUser: make(chan []byte, 256), done: make(chan struct{}), firstByte: make(chan struct{})}
	var err error
	if c.log, err = os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
		return nil, err
	}
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
			if _, werr := c.log.Write(buf[:n]); werr == nil {
				c.mu.Lock()
				c.logged += int64(n)
				c.mu.Unlock()
			}
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

// Logged is the number of bytes written to the log so far.
func (c *Console) Logged() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logged
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
	return c.log.Close()
}
