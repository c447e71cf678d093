package trace

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Clock methods: how a launch's relay events were placed on the guest's clock.
const (
	// ClockHandshake: NTP's estimate from the handshake, the guest's send (T1) and
	// receive (T4) times and the relay's receive (T2) and reply (T3) times:
	// offset = ((T2-T1)+(T3-T4))/2, exact when both directions take equally long; the
	// error is at most half the round trip without the relay's own time,
	// ((T4-T1)-(T3-T2))/2.
	ClockHandshake = "handshake"
	// ClockAccept: no complete handshake on one side (a refusal before the Launch was
	// read, a guest that failed early): the relay's accept is placed at the guest's
	// connect.
	ClockAccept = "accept"
	// ClockNone: the guest recorded no connection; relay events follow the guest's last.
	ClockNone = "none"
)

// Clock is how one launch's relay events were placed on the guest's clock.
type Clock struct {
	Trace         string `json:"trace"`
	Method        string `json:"method"`         // ClockHandshake, ClockAccept or ClockNone
	OffsetNS      int64  `json:"offset_ns"`      // relay CLOCK_MONOTONIC minus guest CLOCK_MONOTONIC
	UncertaintyNS int64  `json:"uncertainty_ns"` // bound of the offset's error (ClockHandshake only)
	GuestEvents   int    `json:"guest_events"`
	RelayEvents   int    `json:"relay_events"`
}

// Step is an event placed on the timeline.
type Step struct {
	Event
	Launch int     `json:"launch"` // 1-based, in the order the launches started
	TMS    float64 `json:"t_ms"`   // ms since the first guest event, on the guest's clock
}

// Timeline is the merged record of one traced command.
type Timeline struct {
	Launches []Clock `json:"launches"`
	Steps    []Step  `json:"steps"`
}

// Merge places guest and relay events of the same launches on one timeline, on the
// guest's clock. Relay events whose trace id the guest did not record are left out (they
// belong to other launches); guest events are kept in their recorded order per launch.
func Merge(guest, relay []Event) Timeline {
	var tl Timeline
	if len(guest) == 0 {
		return tl
	}
	byTrace := map[string][]Event{}
	var order []string
	for _, e := range guest {
		if _, ok := byTrace[e.Trace]; !ok {
			order = append(order, e.Trace)
		}
		byTrace[e.Trace] = append(byTrace[e.Trace], e)
	}
	relayBy := map[string][]Event{}
	for _, e := range relay {
		if _, ok := byTrace[e.Trace]; ok {
			relayBy[e.Trace] = append(relayBy[e.Trace], e)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return byTrace[order[i]][0].Mono < byTrace[order[j]][0].Mono })
	t0 := guest[0].Mono
	for _, e := range guest {
		t0 = min(t0, e.Mono)
	}
	for n, id := range order {
		g, r := byTrace[id], relayBy[id]
		c := align(id, g, r)
		tl.Launches = append(tl.Launches, c)
		for _, e := range g {
			tl.Steps = append(tl.Steps, Step{Event: e, Launch: n + 1, TMS: ms(e.Mono - t0)})
		}
		for _, e := range r {
			tl.Steps = append(tl.Steps, Step{Event: e, Launch: n + 1, TMS: ms(e.Mono - c.OffsetNS - t0)})
		}
	}
	sort.SliceStable(tl.Steps, func(i, j int) bool { return tl.Steps[i].TMS < tl.Steps[j].TMS })
	return tl
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func find(ev []Event, step string) (Event, bool) {
	for _, e := range ev {
		if e.Step == step {
			return e, true
		}
	}
	return Event{}, false
}

// findLast is the last event of step: a guest that retried (StepRetry) connected and
// sent more than once, and the relay recorded only the attempt it served.
func findLast(ev []Event, step string) (Event, bool) {
	for i := len(ev) - 1; i >= 0; i-- {
		if ev[i].Step == step {
			return ev[i], true
		}
	}
	return Event{}, false
}

// stepBefore is the guest event recorded just before the last event of step.
func stepBefore(ev []Event, step string) (Event, bool) {
	for i := len(ev) - 1; i >= 0; i-- {
		if e := ev[i]; e.Step == step {
			if i == 0 {
				return Event{}, false
			}
			return ev[i-1], true
		}
	}
	return Event{}, false
}

// align computes the offset of the relay's clock for one launch (see the Clock* methods).
func align(id string, g, r []Event) Clock {
	c := Clock{Trace: id, Method: ClockNone, GuestEvents: len(g), RelayEvents: len(r)}
	if len(r) == 0 {
		return c
	}
	t1, ok1 := findLast(g, StepSend)
	t4, ok4 := findLast(g, StepResult)
	t2, ok2 := find(r, StepLaunch)
	t3, ok3 := find(r, StepReply)
	if ok1 && ok2 && ok3 && ok4 && t4.Mono >= t1.Mono && t3.Mono >= t2.Mono {
		c.Method = ClockHandshake
		c.OffsetNS = ((t2.Mono - t1.Mono) + (t3.Mono - t4.Mono)) / 2
		c.UncertaintyNS = max(0, ((t4.Mono-t1.Mono)-(t3.Mono-t2.Mono))/2)
		// Causality as well: the relay cannot accept before the guest began to connect
		// (after its step before the connect). The midpoint can break that when the relay
		// was slow to read the request; within the handshake's own bounds (o >= T3-T4),
		// take the latest offset that keeps the order.
		if acc, ok := find(r, StepAccept); ok {
			if before, ok := stepBefore(g, StepConnect); ok {
				if bound := acc.Mono - before.Mono; c.OffsetNS > bound {
					c.OffsetNS = max(bound, t3.Mono-t4.Mono)
				}
			}
		}
		return c
	}
	conn, okc := findLast(g, StepConnect)
	acc, oka := find(r, StepAccept)
	if okc && oka {
		c.Method = ClockAccept
		c.OffsetNS = acc.Mono - conn.Mono
		return c
	}
	// Relay events right after the guest's last.
	last := g[len(g)-1].Mono
	c.OffsetNS = r[0].Mono - last
	return c
}

// WriteText prints the timeline for people: one step per line, aligned, times in ms
// since the interpreter started, relay steps on the guest's clock (see Clock).
func WriteText(w io.Writer, tl Timeline) error {
	multi := len(tl.Launches) > 1
	var b strings.Builder
	for _, s := range tl.Steps {
		fmt.Fprintf(&b, "%10.3f ms  ", s.TMS)
		if multi {
			fmt.Fprintf(&b, "#%-2d ", s.Launch)
		}
		fmt.Fprintf(&b, "%-5s  %-16s  %s\n", s.Side, s.Step, oneLine(s.Text))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// DescribeClock is one line saying how the relay's steps of a launch were timed.
func DescribeClock(c Clock) string {
	switch c.Method {
	case ClockHandshake:
		return fmt.Sprintf("relay times placed on the guest's clock by the handshake round trip (±%.3f ms)", ms(c.UncertaintyNS))
	case ClockAccept:
		return "relay times placed on the guest's clock by its accept (the guest's connect); no complete handshake to do better"
	}
	if c.RelayEvents == 0 {
		return "no relay records for this launch (a relay without tracing, or an older one)"
	}
	return "relay times follow the guest's last step (no connection recorded by the guest)"
}

// oneLine keeps a text on one line and free of control characters (it goes to a terminal).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
