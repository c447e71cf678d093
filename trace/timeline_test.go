package trace

import "testing"

// TestMergeKeepsAcceptAfterConnectStart: a relay slow to read the request makes the
// handshake's midpoint place its accept before the guest even began to connect (seen under
// load in TestTraceLaunch); the offset is pulled back, within the handshake's bounds, so the
// accept follows the guest's step before the connect.
func TestMergeKeepsAcceptAfterConnectStart(t *testing.T) {
	ms := int64(1e6)
	g := func(step string, at int64) Event {
		return Event{Trace: "t", Side: SideGuest, Step: step, Mono: at * ms}
	}
	r := func(step string, at int64) Event {
		return Event{Trace: "t", Side: SideRelay, Step: step, Mono: 1000*ms + at*ms}
	}
	guest := []Event{g(StepArgv, 0), g(StepEnv, 1), g(StepConnect, 2), g(StepSend, 2), g(StepResult, 25)}
	// The relay accepted at once but read the request only 15 ms later.
	relay := []Event{r(StepAccept, 0), r(StepHello, 1), r(StepLaunch, 15), r(StepReply, 22)}
	tl := Merge(guest, relay)
	var accept, env float64
	for _, s := range tl.Steps {
		switch {
		case s.Side == SideRelay && s.Step == StepAccept:
			accept = s.TMS
		case s.Side == SideGuest && s.Step == StepEnv:
			env = s.TMS
		}
	}
	if accept < env {
		t.Errorf("relay accept at %.3f ms, before the guest's step before connecting (%.3f ms): %+v", accept, env, tl.Launches)
	}
	// Still within the handshake: the reply is not after the guest read it.
	for _, s := range tl.Steps {
		if s.Side == SideRelay && s.Step == StepReply && s.TMS > 25 {
			t.Errorf("relay reply at %.3f ms, after the guest read it at 25 ms", s.TMS)
		}
	}
}
