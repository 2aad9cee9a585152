// Package toolstack holds the command lines libxl and xencommons really
// give the device model, as templates, for tests and benchmarks. They
// follow libxl_dm.c (Xen 4.17 to 4.20) option for option.
package toolstack

import "strings"

// Invocation is one command line shape. In Args, "{fd}" stands for a
// pre-opened QMP socket's fd number, "{dir}" for a scratch directory and
// "{disk}" / "{iso}" for image files.
type Invocation struct {
	Name string
	Kind string
	Args []string
}

// Expand fills in the placeholders.
func (inv Invocation) Expand(fd, dir, disk, iso string) []string {
	r := strings.NewReplacer("{fd}", fd, "{dir}", dir, "{disk}", disk, "{iso}", iso)
	out := make([]string, len(inv.Args))
	for i, a := range inv.Args {
		out[i] = r.Replace(a)
	}
	return out
}

// NeedsFD reports whether the invocation expects a socket at "{fd}".
func (inv Invocation) NeedsFD() bool {
	for _, a := range inv.Args {
		if strings.Contains(a, "{fd}") {
			return true
		}
	}
	return false
}

func words(s string) []string { return strings.Fields(s) }

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var qmpHead = words("-chardev socket,id=libxl-cmd,fd={fd},server=on,wait=off -mon chardev=libxl-cmd,mode=control " +
	"-chardev socket,id=libxenstat-cmd,path={dir}/qmp-libxenstat-DOMID,server=on,wait=off -mon chardev=libxenstat-cmd,mode=control")

func withDomid(ws []string, domid string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = strings.ReplaceAll(w, "DOMID", domid)
	}
	return out
}

// Invocations are the shapes the launcher must pass through unharmed.
var Invocations = []Invocation{
	{
		Name: "hvm", Kind: "hvm",
		Args: join(words("-xen-domid 5 -no-shutdown"), withDomid(qmpHead, "5"),
			words("-nodefaults -no-user-config -name"), []string{"guest with spaces"},
			words("-vnc 127.0.0.1:0,to=99 -display none -serial pty -device cirrus-vga,vgamem_mb=8 -boot order=cd "+
				"-usb -usbdevice tablet -smp 2,maxcpus=2 "+
				"-device rtl8139,id=nic0,netdev=net0,mac=00:16:3e:2b:4c:1a "+
				"-netdev type=tap,id=net0,ifname=vif5.0-emu,br=xenbr0,script=no,downscript=no "+
				"-machine xenfv,suppress-vmdesc=on -m 1016 "+
				"-drive file={disk},if=ide,index=0,media=disk,format=raw,cache=writeback "+
				"-drive if=ide,index=2,readonly=on,media=cdrom,id=ide-5632,file={iso},format=raw")),
	},
	{
		Name: "hvm-q35", Kind: "hvm",
		Args: join(words("-xen-domid 9 -no-shutdown"), withDomid(qmpHead, "9"),
			words("-nodefaults -no-user-config -name q35guest -display none -serial pty "+
				"-machine q35,accel=xen,suppress-vmdesc=on -m 512 "+
				"-drive file={disk},if=ide,index=0,media=disk,format=raw,cache=writeback")),
	},
	{
		Name: "pv", Kind: "pv",
		Args: join(words("-xen-domid 6 -no-shutdown"), withDomid(qmpHead, "6"),
			words("-nodefaults -no-user-config -name pv1 -xen-attach -vnc 127.0.0.1:1,to=99 -display none "+
				"-machine xenpv -m 513")),
	},
	{
		Name: "stubdom-dm", Kind: "stubdom-dm",
		Args: join(words("-xen-domid 12 -no-shutdown"), withDomid(qmpHead, "12"),
			words("-nodefaults -no-user-config -name hvm1-dm -xen-attach -nographic -machine xenpv -m 128")),
	},
	{
		Name: "qdisk", Kind: "qdisk",
		Args: words("-xen-domid 0 -xen-attach -name domain-0 -nographic -M xenpv " +
			"-monitor /dev/null -serial /dev/null -parallel /dev/null"),
	},
	{
		Name: "probe", Kind: "probe",
		Args: words("-S -no-user-config -nodefaults -nographic -machine none,accel=xen " +
			"-chardev socket,id=libxl-cmd,fd={fd},server=on,wait=off -mon chardev=libxl-cmd,mode=control"),
	},
	// Seen under a real libxl: Xen 4.17, Debian 12 (scripts/xenlab).
	{
		Name: "xen-4.17-hvm", Kind: "hvm",
		Args: words("-xen-domid 6 -no-shutdown " +
			"-chardev socket,id=libxl-cmd,path={dir}/qmp-libxl-6,server=on,wait=off -mon chardev=libxl-cmd,mode=control " +
			"-chardev socket,id=libxenstat-cmd,path={dir}/qmp-libxenstat-6,server=on,wait=off -mon chardev=libxenstat-cmd,mode=control " +
			"-nodefaults -no-user-config -name hvm-pass -vnc none -display none -serial pty -device cirrus-vga,vgamem_mb=8 " +
			"-boot order=c -net none -machine xenfv,suppress-vmdesc=on -m 24 " +
			"-drive file={disk},if=ide,index=0,media=disk,format=raw,cache=writeback"),
	},
	{
		Name: "xen-4.17-pv-qdisk-vfb", Kind: "pv",
		Args: words("-xen-domid 28 -no-shutdown " +
			"-chardev socket,id=libxl-cmd,path={dir}/qmp-libxl-28,server=on,wait=off -mon chardev=libxl-cmd,mode=control " +
			"-chardev socket,id=libxenstat-cmd,path={dir}/qmp-libxenstat-28,server=on,wait=off -mon chardev=libxenstat-cmd,mode=control " +
			"-nodefaults -no-user-config -xen-attach -name pv-qdisk -vnc 127.0.0.1:0,to=99 -display none -machine xenpv -m 512"),
	},
	{
		Name: "leading-domid", Kind: "hvm",
		Args: join(words("7 -xen-domid 7 -no-shutdown -nodefaults -no-user-config -name lead"),
			words("-display none -machine xenfv -m 256")),
	},
}
