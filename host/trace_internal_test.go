package host

import (
	"errors"
	"slices"
	"testing"

	"lab/wire"
)

// Untraced sessions (no Config.Trace, or a Launch without a trace id) call every hook
// too; none may touch the record.
func TestSessionTraceOff(t *testing.T) {
	for _, tr := range []*sessionTrace{nil, {}} {
		tr.gotHello(&wire.Hello{})
		tr.gotLaunch(&wire.Launch{})
		tr.decided(&Config{}, &wire.Launch{}, launch{})
		tr.refusedLaunch(&refusal{})
		tr.mappedCwd("/a", "/b", "", false)
		tr.started(&process{}, nil, &wire.Launch{})
		tr.replied(0)
		tr.delivered(2)
		tr.exited(ExitStatus{})
		tr.lostSession(errors.New("x"))
	}
}

func TestEnvDecision(t *testing.T) {
	sent := []wire.EnvVar{
		{Name: "LABENV", Value: "P/p:U/u:W/w:GONE:DROPPED"},
		{Name: "P", Value: "/mnt/host/x", Flags: wire.EnvPath},
		{Name: "U", Value: "u"},
		{Name: "W", Value: "w"},
		{Name: "GONE", Flags: wire.EnvUnset},
		{Name: "DROPPED", Value: "d"},
		{Name: "EXTRA", Value: "e"},
	}
	env := []string{"LABENV=P/p:U/u:W/w:GONE:DROPPED", "P=/srv/x", "W=w"}
	crossed, refused := envDecision(sent, env)
	var c, r []string
	for _, v := range crossed {
		c = append(c, v["text"].(string))
	}
	for _, v := range refused {
		r = append(r, v["text"].(string))
	}
	wantC := []string{"LABENV", `P "/mnt/host/x" -> "/srv/x"`, `W="w"`, "GONE removed (unset in the guest)"}
	wantR := []string{"U (/u: host to guest only)", "DROPPED (dropped by the relay)", "EXTRA (not named in LABENV)"}
	if !slices.Equal(c, wantC) || !slices.Equal(r, wantR) {
		t.Errorf("crossed %q, refused %q\nwant %q, %q", c, r, wantC, wantR)
	}
}
