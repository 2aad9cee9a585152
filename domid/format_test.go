package domid

import (
	"testing"
	"time"

	"github.com/dmlaunch/dmlaunch/internal/proc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStateFormatRoundTrip(t *testing.T) {
	st := State{Version: formatVersion, Next: 42, Boot: "0b7e0a5e-1c5b-4c41-9d33-2a3c0f1e1a11",
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
		"no end line":    formatHeader + "\nnext 3\nlease 5 \"hvm\" 1 2 0 17 \"\"\n",
		"after the end":  formatHeader + "\nnext 3\nend\nnext 4\n",
		"old JSON":       `{"version":1,"next":2,"leases":[]}`,
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

func TestVersion1FilesAreRead(t *testing.T) {
	st, err := unmarshalState([]byte(formatV1 + "\nnext 3\nlease 5 \"hvm\" 1 2 0 17 \"\"\n"))
	require.NoError(t, err)
	assert.Equal(t, 1, st.Version, "the caller merges a version 1 file with the registry: it may be cut short")
	assert.Len(t, st.Leases, 1)
}

func TestSalvageKeepsWholeLines(t *testing.T) {
	good := State{Next: 9, Leases: []Lease{{Domid: 4, Kind: "hvm", Holder: proc.Identity{PID: 7, StartTime: 8}, Since: time.Unix(1, 0).UTC()}},
		Released: []Released{{Domid: 3, At: 12}}}.marshal()
	damaged := append([]byte("\x00\x01garbage\n"), good[:len(good)-10]...) // no header, cut short
	st := salvage(damaged)
	assert.Equal(t, 9, st.Next)
	require.Len(t, st.Leases, 1)
	assert.Equal(t, 4, st.Leases[0].Domid)
	assert.Equal(t, []Released{{Domid: 3, At: 12}}, st.Released)
}
