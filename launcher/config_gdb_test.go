package launcher

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGDBSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{"unix socket", []string{"DMLAUNCH_GDB_LISTEN=unix"}, func(t *testing.T, c Config) {
			assert.True(t, c.GDBUnix)
		}, ""},
		{"users by name, uid and group", []string{"DMLAUNCH_GDB_USERS=daemon, 4242,@root"}, func(t *testing.T, c Config) {
			assert.Equal(t, []uint32{1, 4242}, c.GDBUsers.UIDs)
			assert.Equal(t, []uint32{0}, c.GDBUsers.GIDs)
		}, ""},
		{"IPv4-mapped network is IPv4", []string{"DMLAUNCH_GDB_LISTEN=[::]:1234", "DMLAUNCH_GDB_ALLOW=::ffff:192.0.2.0/120"}, func(t *testing.T, c Config) {
			assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, c.GDBAllow)
		}, ""},
		{"unknown user", []string{"DMLAUNCH_GDB_USERS=nosuchuser-x"}, nil, `DMLAUNCH_GDB_USERS="nosuchuser-x" (environment) has "nosuchuser-x", which is no user of this machine`},
		{"unknown group", []string{"DMLAUNCH_GDB_USERS=@nosuchgroup-x"}, nil, "which is no group of this machine"},
		{"listen neither address nor unix", []string{"DMLAUNCH_GDB_LISTEN=unix:/x"}, nil, "or unix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, "", tt.env...)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}
