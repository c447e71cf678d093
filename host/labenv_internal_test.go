package host

import (
	"reflect"
	"strings"
	"testing"

	"lab/wire"
)

func TestParseLabEnv(t *testing.T) {
	got := ParseLabEnv("A:B/p:C/l:D/u:E/w:F/up:G/x:H/pw::/p:I=J/p:K/wu")
	want := []EnvVar{
		{Name: "A", ToGuest: true, ToHost: true},
		{Name: "B", Path: true, ToGuest: true, ToHost: true},
		{Name: "C", PathList: true, ToGuest: true, ToHost: true},
		{Name: "D", ToGuest: true},
		{Name: "E", ToHost: true},
		{Name: "F", Path: true, ToGuest: true},
		{Name: "H", Path: true, ToHost: true},
		{Name: "K", ToGuest: true, ToHost: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLabEnv:\n got %+v\nwant %+v", got, want)
	}
}

func TestHostEnv(t *testing.T) {
	c, share, _ := testConfig(t)
	base := []string{"PATH=/usr/bin", "HOME=/home/u", "KEEP=1", "GONE=old", "D=host"}
	sent := []wire.EnvVar{
		{Name: "LABENV", Value: "A:P/p:L/l:D/u:W/w:GONE:NOTSENT/p"},
		{Name: "A", Value: "a b=c"},
		{Name: "P", Value: "/mnt/host/dir/sub", Flags: wire.EnvPath},
		{Name: "L", Value: "/mnt/host/bin:/usr/lib:rel", Flags: wire.EnvPathList},
		{Name: "D", Value: "guest-only-to-guest"},
		{Name: "W", Value: "w"},
		{Name: "GONE", Flags: wire.EnvUnset},
		{Name: "SNEAKY", Value: "not named in LABENV"},
		{Name: "PATH", Value: "/guest/bin"},
	}
	got := hostEnv(base, sent, c.guestToHostPath)
	want := []string{
		"PATH=/usr/bin", "HOME=/home/u", "KEEP=1", "D=host",
		"LABENV=A:P/p:L/l:D/u:W/w:GONE:NOTSENT/p",
		"A=a b=c",
		"P=" + share + "/dir/sub",
		"L=" + share + "/bin:/usr/lib:rel",
		"W=w",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hostEnv:\n got %q\nwant %q", got, want)
	}
	// No LABENV: nothing crosses, not even what was sent.
	got = hostEnv(base, sent[1:], c.guestToHostPath)
	if !reflect.DeepEqual(got, base) {
		t.Errorf("without LABENV: got %q, want the base %q", got, base)
	}
	for _, kv := range got {
		if strings.HasPrefix(kv, "SNEAKY=") {
			t.Error("a variable LABENV does not name crossed")
		}
	}
}
