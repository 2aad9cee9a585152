package domid

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name     string
		in       Inputs
		domid    int
		source   Source
		agreeing []Source
		err      string
		errType  any
	}{
		{name: "argv", in: Inputs{Argv: []string{"5"}}, domid: 5, source: FromArgv, agreeing: []Source{FromArgv}},
		{name: "dom0 backend", in: Inputs{Argv: []string{"0"}}, domid: 0, source: FromArgv, agreeing: []Source{FromArgv}},
		{name: "env", in: Inputs{Env: "7"}, domid: 7, source: FromEnv, agreeing: []Source{FromEnv}},
		{name: "leading", in: Inputs{Leading: "3"}, domid: 3, source: FromLeading, agreeing: []Source{FromLeading}},
		{name: "setting", in: Inputs{Setting: "32751"}, domid: 0x7FEF, source: FromSetting, agreeing: []Source{FromSetting}},
		{name: "all agree", in: Inputs{Argv: []string{"4"}, Env: "4", Leading: "4", Setting: "04"}, domid: 4, source: FromArgv,
			agreeing: []Source{FromArgv, FromEnv, FromLeading, FromSetting}},
		{name: "none", in: Inputs{}, err: "no domid given"},
		{name: "argv and env disagree", in: Inputs{Argv: []string{"4"}, Env: "5"}, err: "-xen-domid says domain 4 but XEN_DOMAIN_ID says domain 5", errType: &ConflictError{}},
		{name: "two -xen-domid disagree", in: Inputs{Argv: []string{"4", "6"}}, err: "-xen-domid says domain 4 but -xen-domid says domain 6", errType: &ConflictError{}},
		{name: "leading disagrees", in: Inputs{Argv: []string{"4"}, Leading: "3"}, err: "leading argument says domain 3", errType: &ConflictError{}},
		{name: "not a number", in: Inputs{Argv: []string{"five"}}, err: `domid "five" from -xen-domid is not a decimal number`, errType: &InvalidError{}},
		{name: "hex", in: Inputs{Env: "0x10"}, err: "is not a decimal number", errType: &InvalidError{}},
		{name: "negative", in: Inputs{Setting: "-1"}, err: `domid "-1" from DMLAUNCH_DOMID is negative`, errType: &InvalidError{}},
		{name: "reserved", in: Inputs{Argv: []string{"32752"}}, err: "out of range", errType: &InvalidError{}},
		{name: "DOMID_SELF", in: Inputs{Argv: []string{"32753"}}, err: "0x7FF0 and up are reserved", errType: &InvalidError{}},
		{name: "huge", in: Inputs{Argv: []string{"99999999999999999999"}}, err: "out of range", errType: &InvalidError{}},
		{name: "empty value", in: Inputs{Argv: []string{""}}, err: "is empty", errType: &InvalidError{}},
		{name: "invalid before agreement", in: Inputs{Argv: []string{"4"}, Env: "x"}, err: "XEN_DOMAIN_ID", errType: &InvalidError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Resolve(tt.in)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				switch want := tt.errType.(type) {
				case *ConflictError:
					assert.True(t, errors.As(err, &want))
				case *InvalidError:
					assert.True(t, errors.As(err, &want))
				case nil:
					assert.ErrorIs(t, err, ErrNoDomid)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.domid, res.Domid)
			assert.Equal(t, tt.source, res.Source)
			assert.Equal(t, tt.agreeing, res.Agreeing)
		})
	}
}
