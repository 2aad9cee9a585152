package launcher

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckModes(t *testing.T) {
	tests := []struct {
		name    string
		list    []string
		want    []string
		wantErr string
	}{
		{"empty", nil, nil, ""},
		{"off", []string{"off"}, nil, ""},
		{"duplicates dropped", []string{"gdb", "console", "gdb"}, []string{"gdb", "console"}, ""},
		{"unknown", []string{"gdbb"}, nil, `has unknown mode "gdbb"; use gdb, gdb-wait, console, strace, memcheck or off`},
		{"one tracer", []string{"strace", "gdb"}, nil, "asks for both strace and gdb; choose one"},
		{"memcheck serves its own port", []string{"gdb-wait", "memcheck"}, nil, "asks for both gdb-wait and memcheck; choose one"},
		{"console goes with anything", []string{"memcheck", "console"}, []string{"memcheck", "console"}, ""},
		{"excluded pair", []string{"gdb-wait", "console", "gdb"}, nil, "asks for both gdb-wait and gdb; choose one"},
		{"off mixed", []string{"off", "console"}, nil, "mixes off with debug modes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkModes(tt.list)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, tt.wantErr, err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestModeTableIsConsistent(t *testing.T) {
	for _, m := range debugModes {
		assert.NotEmpty(t, m.Help, "%s has help", m.Name)
		for _, x := range m.Excludes {
			other, ok := lookupMode(x)
			require.True(t, ok, "%s excludes unknown mode %s", m.Name, x)
			assert.Contains(t, other.Excludes, m.Name, "exclusion of %s and %s goes both ways", m.Name, x)
		}
		if m.HoldAtStart {
			assert.True(t, m.DebugPort || m.Tracer != "", "%s holds QEMU, so something must release it", m.Name)
		}
		if m.Tracer != "" {
			assert.True(t, m.HoldAtStart, "%s attaches its tracer to a held QEMU", m.Name)
		}
	}
}

func TestSupervisedStepsInOrder(t *testing.T) {
	var names []string
	for _, s := range supervisedSteps {
		names = append(names, s.Name)
	}
	index := func(n string) int {
		for i, x := range names {
			if x == n {
				return i
			}
		}
		t.Fatalf("no step %q in %q", n, names)
		return -1
	}
	assert.Zero(t, index("trap signals"), "signals are trapped before anything can start")
	assert.Less(t, index("open debug port"), index("start QEMU"), "a busy port stops the launch before QEMU starts")
	assert.Less(t, index("start QEMU"), index("write record"))
	assert.Less(t, index("serve debuggers"), index("wait for QEMU"))
	assert.Less(t, index("raise core limit"), index("start QEMU"))
	assert.Equal(t, index("start QEMU")+1, index("lower core limit"), "only QEMU gets the raised core limit")
	assert.Less(t, index("wait for QEMU"), index("stop debuggers"))
	assert.Less(t, index("stop debuggers"), index("keep core"), "a core is looked for once no debugger holds QEMU")
	assert.Less(t, index("keep core"), index("report exit"), "the exit line says where the core is")
	assert.Equal(t, len(names)-1, index("backtrace core"), "the slow backtrace comes last")
}
