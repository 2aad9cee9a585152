package launcher

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A pass-through QEMU that daemonizes runs on as another process: the
// plan names its pidfile, absolute, for the record.
func TestDaemonizingQEMUsPidfileIsPlanned(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tt := range []struct {
		name, line, mode, want string
	}{
		{"dom0 from /etc/init.d/xen", "-xen-domid 0 -xen-attach -name dom0 -nographic -M xenpv -daemonize -monitor none -serial none -parallel none -pidfile /run/qemu-dom0.pid",
			"", "/run/qemu-dom0.pid"},
		{"relative, as QEMU resolves it", "-xen-domid 0 -xen-attach -M xenpv --daemonize -pidfile run/q.pid", "", filepath.Join(dir, "run/q.pid")},
		{"a pidfile without -daemonize is QEMU's own pid", "-xen-domid 5 -machine xenfv -pidfile /run/q.pid", "", ""},
		{"-daemonize without a pidfile", "-xen-domid 5 -machine xenfv -daemonize", "", ""},
		{"supervised", "-xen-domid 5 -machine xenfv -daemonize -pidfile /run/q.pid", "console", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := []string{"DMLAUNCH_CONFIG=", "DMLAUNCH_QEMU=/bin/true", "DMLAUNCH_STATE_DIR=" + filepath.Join(dir, "state"),
				"DMLAUNCH_LOG_DIR=" + dir, "DMLAUNCH_DEBUG=" + tt.mode}
			p, err := Prepare(Inputs{Args: append([]string{"dmlaunch"}, strings.Fields(tt.line)...), Environ: env})
			require.NoError(t, err)
			assert.Equal(t, tt.want, p.PIDFile)
			var out strings.Builder
			p.Describe(&out)
			if tt.want != "" {
				assert.Contains(t, out.String(), "note:    -daemonize with -pidfile: QEMU runs on as the pid it writes to "+tt.want)
			} else {
				assert.NotContains(t, out.String(), "-daemonize with -pidfile")
			}
		})
	}
}
