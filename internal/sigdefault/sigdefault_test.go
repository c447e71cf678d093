package sigdefault

import "testing"

func TestParseMask(t *testing.T) {
	status := "Name:\tcat\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000002200\nSigIgn:\t0000000000080003\n"
	for _, tc := range []struct {
		status, name string
		want         uint64
		ok           bool
	}{
		{status, "SigIgn", 0x80003, true},
		{status, "SigBlk", 0x2200, true},
		{status, "SigCgt", 0, false},
		{"SigIgn:\tnot hex\n", "SigIgn", 0, false},
	} {
		if got, ok := ParseMask([]byte(tc.status), tc.name); got != tc.want || ok != tc.ok {
			t.Errorf("ParseMask(%q, %s) = %x, %v; want %x, %v", tc.status, tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
