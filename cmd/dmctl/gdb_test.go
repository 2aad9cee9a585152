package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/inventory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGDBPrintEveryListenForm(t *testing.T) {
	tests := []struct {
		gdb  string
		host string
		want []string
	}{
		{"127.0.0.1:1239", "xenhost", []string{
			"#   ssh -N -L 1239:127.0.0.1:1239 root@xenhost &",
			"gdb -q -ex 'target remote 127.0.0.1:1239'"}},
		{"[::1]:1239", "xenhost", []string{
			"#   ssh -N -L '1239:[::1]:1239' root@xenhost &",
			"gdb -q -ex 'target remote 127.0.0.1:1239'"}},
		{"0.0.0.0:1239", "xenhost", []string{
			"#   gdb -q -ex 'target remote xenhost:1239'",
			"gdb -q -ex 'target remote 127.0.0.1:1239'"}},
		{"[::]:1239", "2001:db8::5", []string{
			"#   gdb -q -ex 'target remote [2001:db8::5]:1239'",
			"gdb -q -ex 'target remote [::1]:1239'"}},
		{"192.0.2.5:1239", "xenhost", []string{
			"gdb -q -ex 'target remote 192.0.2.5:1239'"}},
		{"/run/dmlaunch/5.gdb", "xenhost", []string{
			"#   ssh -N -L 1239:/run/dmlaunch/5.gdb root@xenhost &",
			"# and there: gdb -q -ex 'target remote 127.0.0.1:1239'",
			"gdb -q -ex 'target remote /run/dmlaunch/5.gdb'"}},
		{"127.0.0.1:1239", "evil host;rm -rf x", []string{
			"#   ssh -N -L 1239:127.0.0.1:1239 'root@evil host;rm -rf x' &"}},
	}
	for _, tt := range tests {
		t.Run(tt.gdb, func(t *testing.T) {
			rec := inventory.Entry{}
			rec.Domid, rec.Name, rec.GDB, rec.Mode, rec.QEMUPID = 5, "a\nb", tt.gdb, "gdb", 42
			lines := printLines(rec, "gdb", tt.host)
			for _, w := range tt.want {
				assert.Contains(t, lines, w)
			}
			assert.Equal(t, `# Domain 5 ("a\nb"): QEMU pid 42, debug port "`+tt.gdb+`", mode "gdb".`, lines[0], "the name cannot end the comment")
			// Pasted into sh, only gdb lines run: everything else is a comment.
			var run []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "#") {
					run = append(run, l)
				}
			}
			require.Len(t, run, 1)
			out, err := exec.Command("sh", "-c", "set -- "+strings.TrimPrefix(run[0], "gdb ")+`; printf '%s\n' "$@"`).Output()
			require.NoError(t, err)
			assert.Contains(t, string(out), "target remote ", "the line parses as words")
		})
	}
}
