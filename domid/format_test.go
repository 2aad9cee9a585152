package domid

import (
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStateFormatRoundTrip(t *testing.T) {
	st := State{Version: 1, Next: 42,
		Leases: []Lease{
			{Domid: 5, Kind: "hvm", Name: `web "one" two`, Holder: proc.Identity{PID: 123, StartTime: 456}, Allocated: true, Since: time.Unix(1700000000, 5).UTC()},
			{Domid: 6, Kind: "manual", Since: time.Unix(0, 0).UTC()},
			{Domid: 7, Kind: "pv", Name: "tab\there\nnewline \x00 and ünïcode", Holder: proc.Identity{PID: 9}, Since: time.Unix(1, 2).UTC()},
		},
		Released: []Released{{Domid: 3, At: 1234.5}},
		Reaped:   1300.25,
	}
	got, err := unmarshalState(st.marshal())
	require.NoError(t, err)
	assert.Equal(t, st, got)
}

func TestStateFormatRejectsDamage(t *testing.T) {
	for name, text := range map[string]string{
		"empty":          "",
		"no header":      "next 1\n",
		"wrong header":   "dmlaunch-leases 9\n",
		"short lease":    formatHeader + "\nlease 5 \"hvm\" 1\n",
		"bad number":     formatHeader + "\nnext x\n",
		"unknown record": formatHeader + "\nfrob 1\n",
		"open quote":     formatHeader + "\nlease 5 \"hvm 1 2 0 0 \"\"\n",
		"truncated line": formatHeader + "\nlease 5 \"hvm\" 1 2 0 17",
		"bad reap time":  formatHeader + "\nreaped soon\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := unmarshalState([]byte(text))
			assert.Error(t, err)
		})
	}
}

func FuzzStateFormat(f *testing.F) {
	f.Add([]byte(State{Next: 3, Leases: []Lease{{Domid: 1, Kind: "hvm", Name: "a b"}}, Released: []Released{{2, 3.5}}}.marshal()))
	f.Add([]byte(formatHeader + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := unmarshalState(data)
		if err != nil {
			return
		}
		again, err := unmarshalState(st.marshal())
		require.NoError(t, err, "what was read must be writable and readable again")
		assert.Equal(t, st.marshal(), again.marshal())
	})
}
