package coredump

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Just enough of ELF to tell a core from any other file, which process it
// is the core of, whether it was written whole, and a binary's build id:
// debug/elf would cost every launch its package set-up for four fields.

const (
	etCore       = 4
	ptLoad       = 1
	ptNote       = 4
	ntPRPSInfo   = 3
	ntGNUBuildID = 3
	// maxNotes bounds what is read of a note segment: a core's notes hold
	// every thread's registers and the list of mapped files.
	maxNotes = 16 << 20
)

// ErrNotCore is returned for a file that is not a 64-bit little-endian
// ELF core.
var ErrNotCore = errors.New("not an ELF core file")

type elfFile struct {
	typ       uint16
	segments  []segment
	size      int64
	allocated int64
}

type segment struct {
	typ            uint32
	offset, filesz uint64
}

func readELF(f *os.File) (*elfFile, error) {
	var hdr [64]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), errNotELF)
	}
	if !bytes.Equal(hdr[:4], []byte("\x7fELF")) || hdr[4] != 2 || hdr[5] != 1 {
		return nil, fmt.Errorf("%s: %w", f.Name(), errNotELF)
	}
	le := binary.LittleEndian
	e := &elfFile{typ: le.Uint16(hdr[16:])}
	phoff, phentsize, phnum := le.Uint64(hdr[32:]), le.Uint16(hdr[54:]), le.Uint16(hdr[56:])
	if phentsize < 56 || phnum > 4096 {
		return nil, fmt.Errorf("%s: bad program headers", f.Name())
	}
	ph := make([]byte, int(phentsize)*int(phnum))
	if _, err := f.ReadAt(ph, int64(phoff)); err != nil {
		return nil, fmt.Errorf("%s: program headers: %w", f.Name(), err)
	}
	for i := 0; i < int(phnum); i++ {
		p := ph[i*int(phentsize):]
		e.segments = append(e.segments, segment{typ: le.Uint32(p), offset: le.Uint64(p[8:]), filesz: le.Uint64(p[32:])})
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	e.size = fi.Size()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.allocated = st.Blocks * 512
	}
	return e, nil
}

var errNotELF = errors.New("not a 64-bit little-endian ELF file")

type note struct {
	typ  uint32
	name string
	desc []byte
}

// notes reads every note of the PT_NOTE segments.
func (e *elfFile) notes(f *os.File) ([]note, error) {
	var out []note
	le := binary.LittleEndian
	for _, s := range e.segments {
		if s.typ != ptNote || s.filesz > maxNotes {
			continue
		}
		b := make([]byte, s.filesz)
		// A core cut short may end inside its notes: use what is there.
		n, err := f.ReadAt(b, int64(s.offset))
		if err != nil && !errors.Is(err, io.EOF) {
			return out, fmt.Errorf("%s: notes: %w", f.Name(), err)
		}
		b = b[:n]
		for len(b) >= 12 {
			namesz, descsz, typ := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])
			b = b[12:]
			nlen, dlen := align4(namesz), align4(descsz)
			if uint64(len(b)) < nlen+dlen {
				break
			}
			out = append(out, note{typ: typ, name: string(bytes.TrimRight(b[:namesz], "\x00")), desc: b[nlen : nlen+uint64(descsz)]})
			b = b[nlen+dlen:]
		}
	}
	return out, nil
}

func align4(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }

// CoreInfo is what a core file says about itself.
type CoreInfo struct {
	// PID is the dumped process's pid in its own pid namespace.
	PID int
	// Command is the dumped thread's name (comm).
	Command string
	// Size is the file's size; Want the size the core needs to be whole
	// (the end of its last written segment). Allocated is what it takes
	// on disk: the kernel leaves pages never touched as holes.
	Size, Want, Allocated int64
}

// Whole reports whether every segment the kernel meant to write is in the
// file: a core cut short by RLIMIT_CORE ends early, and gdb then reports
// "segment extending past end of file" and frames it cannot read.
func (c CoreInfo) Whole() bool { return c.Size >= c.Want }

// ReadCore reads a core file's process and size facts.
func ReadCore(path string) (CoreInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return CoreInfo{}, err
	}
	defer f.Close()
	e, err := readELF(f)
	if err != nil {
		return CoreInfo{}, fmt.Errorf("%w: %v", ErrNotCore, err)
	}
	if e.typ != etCore {
		return CoreInfo{}, fmt.Errorf("%s: %w", path, ErrNotCore)
	}
	info := CoreInfo{Size: e.size, Allocated: e.allocated}
	for _, s := range e.segments {
		if end := int64(s.offset + s.filesz); s.typ == ptLoad && end > info.Want {
			info.Want = end
		}
	}
	notes, err := e.notes(f)
	if err != nil {
		return info, err
	}
	for _, n := range notes {
		// struct elf_prpsinfo on 64-bit Linux: state, sname, zomb, nice
		// (one byte each), 4 bytes of padding, flag (8), uid, gid, pid,
		// ppid, pgrp, sid (4 each), fname[16], psargs[80].
		if n.typ == ntPRPSInfo && n.name == "CORE" && len(n.desc) >= 56 {
			info.PID = int(binary.LittleEndian.Uint32(n.desc[24:]))
			info.Command = string(bytes.TrimRight(n.desc[40:56], "\x00"))
		}
	}
	return info, nil
}

// BuildID reads the GNU build id of an ELF binary, in hex: the same id in
// a core's mapped binary and on disk means gdb reads the right symbols.
func BuildID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	e, err := readELF(f)
	if err != nil {
		return "", err
	}
	notes, err := e.notes(f)
	if err != nil {
		return "", err
	}
	for _, n := range notes {
		if n.typ == ntGNUBuildID && n.name == "GNU" {
			return hex.EncodeToString(n.desc), nil
		}
	}
	return "", fmt.Errorf("%s: no build id", path)
}
