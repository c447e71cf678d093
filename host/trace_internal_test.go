package host

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"lab/trace"
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
		tr.exited(ExitStatus{}, &process{})
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

// The relay's exit record is split in two: the program's own exit (wait status ready, at
// the time it was seen) and the end of its output, with how it ended.
func TestSessionTraceExitAndDrain(t *testing.T) {
	for _, cut := range []bool{false, true} {
		var buf bytes.Buffer
		tr := &sessionTrace{sink: trace.NewSink(&buf, trace.SideRelay), id: "abcd", start: time.Now()}
		p := &process{pid: 42, drain: 500 * time.Millisecond, exitMono: trace.Mono() - int64(3*time.Millisecond)}
		p.cut.Store(cut)
		tr.exited(ExitStatus{Code: 3}, p)
		evs, _, err := trace.Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].Step != trace.StepProgramExit || evs[1].Step != trace.StepExit {
			t.Fatalf("cut %v: events %+v; want %q then %q", cut, evs, trace.StepProgramExit, trace.StepExit)
		}
		if evs[0].Mono != p.exitMono || evs[0].Text != "host pid 42 exited (exit status 3)" {
			t.Errorf("cut %v: program exit at %d %q; want at %d", cut, evs[0].Mono, evs[0].Text, p.exitMono)
		}
		if d := evs[1].Mono - evs[0].Mono; d < int64(3*time.Millisecond) {
			t.Errorf("cut %v: drained %d ns after the exit; want ≥ 3 ms", cut, d)
		}
		want := "Exit frame sent after both output EOFs, "
		if cut {
			want = "Exit frame sent after the output drain deadline (500ms idle after the exit: a descendant holds the output open), "
		}
		if !strings.Contains(evs[1].Text, want) || evs[1].Data["drain_deadline"] != cut {
			t.Errorf("cut %v: exit record %q %v; want text with %q", cut, evs[1].Text, evs[1].Data, want)
		}
	}
}
