// Package docs holds the manual; its test renders the man pages.
package docs

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/dmlaunch/dmlaunch/internal/realtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestManPagesRenderWithoutWarnings(t *testing.T) {
	groff := realtest.Need(t, "groff")[0]
	for _, page := range []string{"dmlaunch.8", "dmctl.8"} {
		t.Run(page, func(t *testing.T) {
			cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-b", "-z", page)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Empty(t, strings.TrimSpace(string(out)), "groff warnings")

			// -P-c: plain text instead of overstrike for bold and underline.
			text, err := exec.Command(groff, "-man", "-Tascii", "-P-c", "-P-b", "-P-u", page).Output()
			require.NoError(t, err)
			for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO"} {
				assert.Contains(t, string(text), section)
			}
		})
	}
}
