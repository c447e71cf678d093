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

// A guest that retried (the relay answered EAGAIN) sent twice; the relay recorded only the
// attempt it served, so the clock is set by the last send and result.
func TestMergeAlignsOnTheLastAttempt(t *testing.T) {
	ms := int64(1e6)
	g := func(step string, at int64) Event {
		return Event{Trace: "t", Side: SideGuest, Step: step, Mono: at * ms}
	}
	r := func(step string, at int64) Event {
		return Event{Trace: "t", Side: SideRelay, Step: step, Mono: 5000*ms + at*ms}
	}
	guest := []Event{g(StepArgv, 0), g(StepConnect, 1), g(StepSend, 2), g(StepRetry, 4),
		g(StepConnect, 20), g(StepSend, 21), g(StepResult, 31)}
	// Relay clock 5000 ms ahead; the served attempt took 5 ms each way.
	relay := []Event{r(StepAccept, 20), r(StepHello, 25), r(StepLaunch, 26), r(StepReply, 26)}
	tl := Merge(guest, relay)
	if c := tl.Launches[0]; c.Method != ClockHandshake || c.OffsetNS != 5000*ms || c.UncertaintyNS != 5*ms {
		t.Errorf("clock %+v; want handshake, offset 5000 ms, ±5 ms", c)
	}
}
