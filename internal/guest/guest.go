// Package guest builds the smallest guest that proves a console works: a
// 512-byte boot sector that writes a message to COM1 and then, through
// QEMU's isa-debug-exit device, ends QEMU with a chosen status.
package guest

import (
	"encoding/binary"
	"fmt"
)

const (
	loadAddr = 0x7C00 // where the BIOS loads a boot sector
	com1     = 0x3F8
	// DebugExitPort is the iobase of the isa-debug-exit device the guest
	// writes its status to; QEMU then exits with (status<<1)|1.
	DebugExitPort = 0xF4
)

// QEMUArgs are the options that give the guest its exit device.
func QEMUArgs() []string {
	return []string{"-device", fmt.Sprintf("isa-debug-exit,iobase=0x%x,iosize=0x04", DebugExitPort)}
}

// ExitStatus is QEMU's exit status for a guest status written to the
// isa-debug-exit device.
func ExitStatus(status byte) int { return int(status)<<1 | 1 }

// Options shape the boot sector.
type Options struct {
	Message string
	// Repeat writes the message this many times (at least once), to push
	// a lot of bytes through the console.
	Repeat uint16
	// Forever writes the message again and again, without end (Repeat
	// and Exit are then moot).
	Forever bool
	// Exit ends QEMU through isa-debug-exit with this status; without it
	// the guest halts and runs forever.
	Exit       bool
	ExitStatus byte
	// Spin keeps the virtual CPU busy instead of halting, so QEMU uses
	// CPU time for as long as it runs: a test can tell it is not stopped.
	Spin bool
	// Park, without Exit, halts with every PIC interrupt masked and
	// interrupts on instead of off: the guest idles forever all the same,
	// and under Xen it stays up (Xen powers off an HVM guest whose vCPU
	// halts with interrupts off).
	Park bool
}

// BootSector assembles the guest. Real-mode x86, hand-encoded:
//
//	cli; cld; xor ax,ax; mov ds,ax; mov es,ax; mov ss,ax; mov sp,0x7C00
//	mov cx,REPEAT
//	outer: mov si,msg
//	inner: lodsb; test al,al; jz next; mov ah,al
//	       mov dx,0x3FD
//	wait:  in al,dx; test al,0x20; jz wait
//	       mov al,ah; mov dx,0x3F8; out dx,al; jmp inner
//	next:  loop outer            (Forever: jmp outer)
//	[mov dx,0xF4; mov al,STATUS; out dx,al]
//	[mov al,0xFF; out 0x21,al; out 0xA1,al; sti]   (Park)
//	halt:  hlt; jmp halt          (or, with Spin, spin: jmp spin)
//	msg:   db MESSAGE, 0
//
// Like every real serial driver, it waits for the transmit holding
// register to be empty (LSR bit 5) before each byte. That is what lets a
// slow reader hold the guest back: QEMU keeps THRE clear while its
// chardev cannot take the byte, and a byte written regardless would
// overwrite the one still waiting.
func BootSector(o Options) ([]byte, error) {
	rep := o.Repeat
	if rep == 0 {
		rep = 1
	}
	code := []byte{0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C}
	code = append(code, 0xB9, byte(rep), byte(rep>>8)) // mov cx, rep
	outer := len(code)
	code = append(code, 0xBE, 0, 0) // mov si, msg (patched below)
	msgFixup := len(code) - 2
	inner := len(code)
	code = append(code, 0xAC, 0x84, 0xC0, 0x74, 0x12)                                   // lodsb; test al,al; jz next (+18)
	code = append(code, 0x88, 0xC4)                                                     // mov ah,al
	code = append(code, 0xBA, (com1+5)&0xFF, (com1+5)>>8, 0xEC, 0xA8, 0x20, 0x74, 0xFB) // mov dx,LSR; wait: in al,dx; test al,0x20; jz wait
	code = append(code, 0x88, 0xE0, 0xBA, com1&0xFF, com1>>8, 0xEE)                     // mov al,ah; mov dx,THR; out dx,al
	code = append(code, 0xEB, byte(inner-(len(code)+2)))                                // jmp inner
	if o.Forever {
		code = append(code, 0xEB, byte(outer-(len(code)+2))) // jmp outer
	} else {
		code = append(code, 0xE2, byte(outer-(len(code)+2))) // loop outer
	}
	if o.Exit {
		code = append(code, 0xBA, DebugExitPort, 0x00, 0xB0, o.ExitStatus, 0xEE)
	} else if o.Park {
		code = append(code, 0xB0, 0xFF, 0xE6, 0x21, 0xE6, 0xA1, 0xFB)
	}
	if o.Spin {
		code = append(code, 0xEB, 0xFE) // spin: jmp spin
	} else {
		code = append(code, 0xF4, 0xEB, 0xFD) // halt: hlt; jmp halt
	}
	binary.LittleEndian.PutUint16(code[msgFixup:], uint16(loadAddr+len(code)))
	code = append(code, o.Message...)
	code = append(code, 0)
	if len(code) > 510 {
		return nil, fmt.Errorf("boot sector needs %d bytes, 510 fit: shorten the message", len(code))
	}
	sector := make([]byte, 512)
	copy(sector, code)
	sector[510], sector[511] = 0x55, 0xAA
	return sector, nil
}
