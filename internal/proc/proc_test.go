package proc

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	tail := " 1 1 0 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 10000 200 18446744073709551615"
	tests := []struct {
		name  string
		text  string
		state byte
		start uint64
		err   string
	}{
		{name: "plain", text: "42 (qemu) S" + tail + "\n", state: 'S', start: 987654},
		{name: "name with spaces and parentheses", text: "42 (a) b (c) R" + tail, state: 'R', start: 987654},
		{name: "zombie", text: "42 (x) Z" + tail, state: 'Z', start: 987654},
		{name: "no name", text: "42 x S" + tail, err: "no command name"},
		{name: "cut short", text: "42 (x) S 1 2 3", err: "6 fields, want at least 22"},
		{name: "ends at the name", text: "42 (x)", err: "no command name"},
		{name: "bad start time", text: "42 (x) S 1 1 0 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 soon 1", err: "invalid syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, start, err := parseStat([]byte(tt.text))
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.state, state)
			assert.Equal(t, tt.start, start)
		})
	}
}

func TestSelfAndAlive(t *testing.T) {
	me, err := Self()
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), me.PID)
	assert.NotZero(t, me.StartTime)
	assert.True(t, me.Alive())
	assert.False(t, Identity{PID: me.PID, StartTime: me.StartTime + 1}.Alive(), "a recycled pid is not the same process")
	assert.False(t, Identity{}.Alive())
}

func TestCmdline(t *testing.T) {
	got, err := Cmdline(os.Getpid())
	require.NoError(t, err)
	assert.Equal(t, os.Args, got)
	_, err = Cmdline(0)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
