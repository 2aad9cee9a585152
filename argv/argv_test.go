package argv

import (
	"errors"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/toolstack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		leading string
		words   []Word
		err     string
	}{
		{name: "empty"},
		{
			name:  "value option consumes a dash word",
			args:  []string{"-name", "-S", "-S"},
			words: []Word{{Flag: "-name", Value: "-S", HasValue: true}, {Flag: "-S"}},
		},
		{
			name:  "double dash equals single",
			args:  []string{"--machine", "xenfv", "--nographic"},
			words: []Word{{Flag: "--machine", Value: "xenfv", HasValue: true}, {Flag: "--nographic"}},
		},
		{
			name:  "bare word is a disk image",
			args:  []string{"disk.img", "-m", "64"},
			words: []Word{{Value: "disk.img"}, {Flag: "-m", Value: "64", HasValue: true}},
		},
		{
			name:    "leading domid",
			args:    []string{"3", "-xen-domid", "3"},
			leading: "3",
			words:   []Word{{Flag: "-xen-domid", Value: "3", HasValue: true}},
		},
		{
			name:  "leading word that is not a number is a disk image",
			args:  []string{"3a", "-S"},
			words: []Word{{Value: "3a"}, {Flag: "-S"}},
		},
		{
			name:  "unknown option takes no value",
			args:  []string{"-frobnicate", "x"},
			words: []Word{{Flag: "-frobnicate"}, {Value: "x"}},
		},
		{
			name:  "empty word",
			args:  []string{"", "-"},
			words: []Word{{Value: ""}, {Flag: "-"}},
		},
		{
			name:  "missing value",
			args:  []string{"-S", "-xen-domid"},
			words: []Word{{Flag: "-S"}, {Flag: "-xen-domid"}},
			err:   "option -xen-domid needs a value",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, err := Parse(tt.args)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				var mv *MissingValueError
				assert.True(t, errors.As(err, &mv))
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.leading, cl.LeadingDomid)
			if len(tt.words) == 0 {
				assert.Empty(t, cl.Words)
			} else {
				assert.Equal(t, tt.words, cl.Words)
			}
			assert.Equal(t, nonNil(tt.args), cl.Render(), "render must give back the input")
		})
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestWordNames(t *testing.T) {
	tests := []struct{ flag, name, canonical string }{
		{"-M", "M", "machine"},
		{"--M", "M", "machine"},
		{"-machine", "machine", "machine"},
		{"---x", "-x", "-x"},
		{"-", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			w := Word{Flag: tt.flag}
			assert.Equal(t, tt.name, w.Name())
			assert.Equal(t, tt.canonical, w.Canonical())
		})
	}
}

func TestSubopts(t *testing.T) {
	tests := []struct {
		in, implied string
		want        Subopts
	}{
		{"xenfv,suppress-vmdesc=on", "type", Subopts{{Key: "type", Value: "xenfv", Implied: true}, {Key: "suppress-vmdesc", Value: "on"}}},
		{"type=xenpv", "type", Subopts{{Key: "type", Value: "xenpv"}}},
		{"file=a,,b,if=ide", "", Subopts{{Key: "file", Value: "a,b"}, {Key: "if", Value: "ide"}}},
		{"socket,id=x,server,nowait", "backend", Subopts{{Key: "backend", Value: "socket", Implied: true}, {Key: "id", Value: "x"}, {Key: "server", Bare: true}, {Key: "nowait", Bare: true}}},
		{"a=1,", "", Subopts{{Key: "a", Value: "1"}, {Key: "", Bare: true}}},
		{",,,", "", Subopts{{Key: ",", Bare: true}, {Key: "", Bare: true}}},
		{"k=v=w", "", Subopts{{Key: "k", Value: "v=w"}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := ParseSubopts(tt.in, tt.implied)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, got.String())
		})
	}
}

func TestSuboptsGetWith(t *testing.T) {
	so := ParseSubopts("xenfv,server,accel=kvm,accel=xen", "type")
	v, ok := so.Get("accel")
	assert.True(t, ok)
	assert.Equal(t, "xen", v, "the last occurrence wins, as in QEMU")
	v, _ = so.Get("server")
	assert.Equal(t, "on", v)
	_, ok = so.Get("nope")
	assert.False(t, ok)

	changed := so.With("type", "xenpv").With("path", "/a,b")
	assert.Equal(t, "xenpv,server,accel=kvm,accel=xen,path=/a,,b", changed.String())
	assert.Equal(t, "xenfv,server,accel=kvm,accel=xen", so.String(), "With must not change the original")
}

func TestClassify(t *testing.T) {
	for _, inv := range toolstack.Invocations {
		t.Run(inv.Name, func(t *testing.T) {
			cl, err := Parse(inv.Expand("3", "/run/x", "/d.img", "/c.iso"))
			require.NoError(t, err)
			assert.Equal(t, Kind(inv.Kind), cl.Classify())
			assert.Empty(t, cl.Unknown(), "every option of a real toolstack line is in the table")
		})
	}
	more := []struct {
		args string
		want Kind
	}{
		{"-xen-domid 3 -M pc", KindHVM},
		{"-xen-domid 3 -machine type=xenpv -xen-attach", KindPV},
		{"-xen-domid 3 -machine xenpv -monitor /dev/null -serial /dev/null", KindPV},
		// Debian 12's /etc/init.d/xen starts dom0's own QEMU so (Xen 4.17, scripts/xenlab).
		{"-xen-domid 0 -xen-attach -name dom0 -nographic -M xenpv -daemonize -monitor none -serial none -parallel none -pidfile /run/qemu-dom0.pid", KindQdisk},
		// xl restore of an HVM guest under libxl 4.17: the saved state comes on an inherited fd.
		{"-xen-domid 22 -no-shutdown -chardev socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-22,server=on,wait=off -mon chardev=libxl-cmd,mode=control " +
			"-chardev socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-22,server=on,wait=off -mon chardev=libxenstat-cmd,mode=control " +
			"-nodefaults -no-user-config -name save-passthrough -vnc none -display none -serial pty -device cirrus-vga,vgamem_mb=8 -boot order=c " +
			"-net none -incoming fd:15 -machine xenfv,suppress-vmdesc=on -m 24 " +
			"-drive file=/root/xentest/save-passthrough.img,if=ide,index=0,media=disk,format=raw,cache=writeback", KindHVM},
		{"-machine none", KindProbe},
		{"-machine pc -display none", KindUnknown},
		{"-xen-domid 3 -machine virt", KindUnknown},
		{"-xen-domid 3 -machine microvm -accel xen", KindHVM},
		{"-version", KindQuery},
		{"--help", KindQuery},
		{"-h", KindQuery},
		{"-xen-domid 3 -machine xenfv -version", KindQuery},
		{"-machine help", KindQuery},
		{"-M ?", KindQuery},
		{"-device e1000,help", KindQuery},
		{"-device help", KindQuery},
		{"-cpu help", KindQuery},
		{"-xen-domid 3 -machine xenfv -name help", KindHVM},
		{"-xen-domid 3 -machine xenfv -device virtio-blk,drive=helper", KindHVM},
		{"-xen-domid 3 -machine xenfv -device e1000,,help", KindHVM},
	}
	for _, tt := range more {
		t.Run(tt.args, func(t *testing.T) {
			cl, err := Parse(strings.Fields(tt.args))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cl.Classify())
		})
	}
}

func TestGuestName(t *testing.T) {
	cl, err := Parse([]string{"-name", "my guest,,x,process=qemu-dm-5,debug-threads=on"})
	require.NoError(t, err)
	assert.Equal(t, "my guest,x", cl.GuestName())
}

func TestStripLeadingDomid(t *testing.T) {
	cl, err := Parse([]string{"7", "-xen-domid", "7", "-S"})
	require.NoError(t, err)
	out, applied, err := ApplyRules(cl, StripLeadingDomid)
	require.NoError(t, err)
	assert.Equal(t, []string{"-xen-domid", "7", "-S"}, out.Render())
	require.Len(t, applied, 1)
	assert.Equal(t, "strip-leading-domid", applied[0].Rule)
	assert.Equal(t, "7", cl.LeadingDomid, "the rule works on a copy")

	plain, _ := Parse([]string{"-S"})
	_, applied, err = ApplyRules(plain, StripLeadingDomid)
	require.NoError(t, err)
	assert.Empty(t, applied, "a rule that changes nothing is not reported")
}

func TestRuleErrorNamesRule(t *testing.T) {
	boom := errors.New("boom")
	r := Rule{Name: "broken", Apply: func(cl CommandLine) (CommandLine, error) { return cl, boom }}
	_, _, err := ApplyRules(CommandLine{}, r)
	require.Error(t, err)
	assert.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "broken")
}

func TestDebugRules(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"replaces the first serial", []string{"-serial", "pty", "-serial", "null"}, []string{"-serial", "/dev/pts/9", "-serial", "null"}},
		{"adds one", []string{"-nographic"}, []string{"-nographic", "-serial", "/dev/pts/9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, err := Parse(tt.args)
			require.NoError(t, err)
			out, _, err := ApplyRules(cl, SerialToDevice("/dev/pts/9"))
			require.NoError(t, err)
			assert.Equal(t, tt.want, out.Render())
		})
	}
	cl, _ := Parse([]string{"-S"})
	out, _, err := ApplyRules(cl, AddQMPSocket("/run/a,b/5.qmp"))
	require.NoError(t, err)
	assert.Equal(t, []string{"-S", "-chardev", "socket,id=dmlaunch-qmp,path=/run/a,,b/5.qmp,server=on,wait=off", "-mon", "chardev=dmlaunch-qmp,mode=control"}, out.Render())
	path, _ := ParseSubopts(out.Words[1].Value, "backend").Get("path")
	assert.Equal(t, "/run/a,b/5.qmp", path, "the path survives QEMU's comma escaping")

	pty, _ := Parse([]string{"-serial", "pty"})
	assert.True(t, pty.WantsPTYSerial())
	none, _ := Parse([]string{"-serial", "null"})
	assert.False(t, none.WantsPTYSerial())
}
