package argv

import (
	"slices"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/toolstack"
)

// The fuzzer's input is one string holding the words separated by NUL,
// which a real argv can never contain inside a word.
func FuzzRoundTrip(f *testing.F) {
	for _, inv := range toolstack.Invocations {
		f.Add(strings.Join(inv.Expand("17", "/var/run/xen", "/srv/a,,b.img", "/srv/c d.iso"), "\x00"))
	}
	f.Add("")
	f.Add("-name\x00")
	f.Add("5\x00-xen-domid")
	f.Add("--M\x00xenpv,,\x00-drive\x00file=,,,,x,\x00\x00-")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		cl, _ := Parse(args)
		if got := cl.Render(); !slices.Equal(got, args) {
			t.Fatalf("Render(Parse(%q)) = %q", args, got)
		}
		for _, w := range cl.Words {
			if so := ParseSubopts(w.Value, "type"); so.String() != w.Value {
				t.Fatalf("sub-options of %q render as %q", w.Value, so.String())
			}
		}
		_ = cl.Classify()
	})
}

func BenchmarkParseRender(b *testing.B) {
	args := toolstack.Invocations[0].Expand("17", "/var/run/xen", "/srv/a.img", "/srv/c.iso")
	b.ReportAllocs()
	for b.Loop() {
		cl, err := Parse(args)
		if err != nil {
			b.Fatal(err)
		}
		_ = cl.Classify()
		_ = cl.Render()
	}
}

func BenchmarkSubopts(b *testing.B) {
	s := "if=ide,index=2,readonly=on,media=cdrom,id=ide-5632,file=/srv/a,,b.iso,format=raw"
	b.ReportAllocs()
	for b.Loop() {
		_ = ParseSubopts(s, "").String()
	}
}
