package argv

import "slices"

// valueOptions and flagOptions list every option of qemu-system-i386 7.2 as
// Debian builds it (the TCG build in qemu-system-x86 and the Xen-only build
// in qemu-system-xen), under the name QEMU's own option table uses (no
// leading dash). TestOptionTableMatchesRealQEMU asks both binaries about
// each entry and about every option their -help lists, so the table cannot
// drift from the QEMU it is tested against.
//
// QEMU decides arity from this table alone (lookup_opt in softmmu/vl.c): an
// option that takes a value consumes the next word whatever it looks like,
// "-name -S" names the domain "-S". Parsing must agree or every later word
// is misread.
var valueOptions = []string{
	"D", "L", "M", "accel", "acpitable", "action", "add-fd", "append", "audio",
	"audiodev", "bios", "blockdev", "boot", "cdrom", "chardev", "chroot",
	"compat", "cpu", "d", "debugcon", "device", "dfilter", "display", "drive",
	"dtb", "dump-vmstate", "echr", "fda", "fdb", "fsdev", "fw_cfg", "g", "gdb",
	"global", "hda", "hdb", "hdc", "hdd", "icount", "incoming", "initrd",
	"iscsi", "k", "kernel", "loadvm", "m", "machine", "mem-path", "mon",
	"monitor", "msg", "mtdblock", "name", "net", "netdev", "nic", "numa",
	"object", "option-rom", "overcommit", "parallel", "pflash", "pidfile",
	"plugin", "prom-env", "qmp", "qmp-pretty", "qtest", "qtest-log",
	"readconfig", "rotate", "rtc", "runas", "sandbox", "sd", "seed",
	"semihosting-config", "serial", "set", "smbios", "smp", "spice", "tpmdev",
	"trace", "usbdevice", "uuid", "vga", "virtfs", "vnc", "watchdog-action",
	"xen-domid",
}

var flagOptions = []string{
	"S", "async-teardown", "audio-help", "daemonize", "enable-kvm",
	"enable-sync-profile", "full-screen", "h", "help", "mem-prealloc",
	"no-acpi", "no-fd-bootchk", "no-hpet", "no-reboot", "no-shutdown",
	"no-user-config", "nodefaults", "nographic", "old-param",
	"only-migratable", "portrait", "preconfig", "s", "semihosting",
	"singlestep", "snapshot", "usb", "version", "win2k-hack", "xen-attach",
	"xen-domid-restrict",
}

// laterOptions are options of QEMU releases newer than the ones the tests
// run, which a newer Xen's QEMU may be given; they take a value. The oracle
// test accepts "invalid option" for these.
var laterOptions = []string{
	"run-with", // QEMU 9.0: -run-with chroot=dir,async-teardown=on
}

// buildOptions lack in one of the two Debian builds.
var buildOptions = []string{
	"tpmdev", // TPM backends are not in the Xen-only build
}

// The tables are sorted slices, searched by binary search, rather than
// maps: a map is built when the program starts, and dmlaunch starts on
// every launch of every domain (TestOptionTablesSorted keeps them sorted).
func inTable(table []string, name string) bool {
	_, found := slices.BinarySearch(table, name)
	return found
}

// Known reports whether name (without dashes) is an option in the table,
// and whether it takes a value.
func Known(name string) (known, hasValue bool) {
	switch {
	case inTable(valueOptions, name), inTable(laterOptions, name):
		return true, true
	case inTable(flagOptions, name):
		return true, false
	}
	return false, false
}

// canonicalName resolves QEMU's short spellings: "-M" is "-machine".
func canonicalName(name string) string {
	if name == "M" {
		return "machine"
	}
	return name
}

// Options returns every option name in the table.
func Options() []string {
	return slices.Concat(valueOptions, flagOptions, laterOptions)
}
