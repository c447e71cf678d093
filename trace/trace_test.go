package trace

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ev(side, tr, step string, mono int64) Event {
	return Event{Trace: tr, Side: side, Step: step, Mono: mono, Text: step + " text"}
}

// The relay's clock runs 1,000,000 ns ahead of the guest's; the link takes 100 ns each
// way; the relay spends 50 ns between reading the Launch and replying.
func TestMergeHandshake(t *testing.T) {
	const off = 1_000_000
	guest := []Event{
		ev(SideGuest, "a", StepArgv, 1000),
		ev(SideGuest, "a", StepConnect, 1100),
		ev(SideGuest, "a", StepSend, 1200),
		ev(SideGuest, "a", StepResult, 1450),
		ev(SideGuest, "a", StepExit, 2000),
	}
	relay := []Event{
		ev(SideRelay, "a", StepAccept, off+1050),
		ev(SideRelay, "a", StepLaunch, off+1300),
		ev(SideRelay, "a", StepReply, off+1350),
		ev(SideRelay, "a", StepExit, off+1900),
		ev(SideRelay, "other", StepExit, 5), // another launch: not ours
	}
	tl := Merge(guest, relay)
	if len(tl.Launches) != 1 {
		t.Fatalf("launches: %+v", tl.Launches)
	}
	c := tl.Launches[0]
	if c.Method != ClockHandshake || c.OffsetNS != off || c.UncertaintyNS != 100 || c.GuestEvents != 5 || c.RelayEvents != 4 {
		t.Fatalf("clock = %+v; want handshake, offset %d, uncertainty 100", c, off)
	}
	var got []string
	for _, s := range tl.Steps {
		got = append(got, fmt.Sprintf("%s %s %.6f", s.Side, s.Step, s.TMS))
	}
	want := []string{
		"guest interpreter argv 0.000000",
		"relay accept 0.000050",
		"guest connect 0.000100",
		"guest hello+launch 0.000200",
		"relay launch 0.000300",
		"relay reply 0.000350",
		"guest launch result 0.000450",
		"relay exit 0.000900",
		"guest exit 0.001000",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMergeFallbacks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		guest  []Event
		relay  []Event
		method string
		offset int64
	}{
		{"refused before the launch was read: accept at connect",
			[]Event{ev(SideGuest, "a", StepConnect, 100), ev(SideGuest, "a", StepSend, 110), ev(SideGuest, "a", StepError, 150)},
			[]Event{ev(SideRelay, "a", StepAccept, 590)}, ClockAccept, 490},
		{"no relay records", []Event{ev(SideGuest, "a", StepSend, 110)}, nil, ClockNone, 0},
		{"no guest connect: after the guest's last step",
			[]Event{ev(SideGuest, "a", StepArgv, 100), ev(SideGuest, "a", StepError, 120)},
			[]Event{ev(SideRelay, "a", StepAccept, 1000)}, ClockNone, 880},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := Merge(tc.guest, tc.relay)
			if c := tl.Launches[0]; c.Method != tc.method || c.OffsetNS != tc.offset {
				t.Fatalf("clock = %+v; want %s, offset %d", c, tc.method, tc.offset)
			}
		})
	}
	if tl := Merge(nil, []Event{ev(SideRelay, "a", StepAccept, 1)}); len(tl.Steps) != 0 || len(tl.Launches) != 0 {
		t.Errorf("no guest events, yet %+v", tl)
	}
}

// Two launches (sh -c 'a.exe; b.exe'): numbered in start order, each with its own clock.
func TestMergeTwoLaunches(t *testing.T) {
	guest := []Event{ev(SideGuest, "b", StepArgv, 500), ev(SideGuest, "a", StepArgv, 100), ev(SideGuest, "a", StepExit, 200), ev(SideGuest, "b", StepExit, 600)}
	tl := Merge(guest, nil)
	if len(tl.Launches) != 2 || tl.Launches[0].Trace != "a" || tl.Launches[1].Trace != "b" {
		t.Fatalf("launches: %+v", tl.Launches)
	}
	var b bytes.Buffer
	WriteText(&b, tl)
	want := "     0.000 ms  #1  guest  interpreter argv  interpreter argv text\n" +
		"     0.000 ms  #1  guest  exit              exit text\n" +
		"     0.000 ms  #2  guest  interpreter argv  interpreter argv text\n" +
		"     0.001 ms  #2  guest  exit              exit text\n"
	if b.String() != want {
		t.Errorf("text:\n%q\nwant:\n%q", b.String(), want)
	}
}

func TestWriteTextOneLine(t *testing.T) {
	tl := Timeline{Launches: []Clock{{Trace: "a"}}, Steps: []Step{{Event: Event{Side: SideRelay, Step: StepRefused, Text: "bad\nname\x1b[31m"}, Launch: 1, TMS: 12.3456}}}
	var b bytes.Buffer
	WriteText(&b, tl)
	if want := "    12.346 ms  relay  refused           bad name [31m\n"; b.String() != want {
		t.Errorf("text = %q; want %q", b.String(), want)
	}
}

func TestSinkAndParse(t *testing.T) {
	var b bytes.Buffer
	s := NewSink(&b, SideGuest)
	s.Record("t1", StepConnect, "c", map[string]any{"n": 1})
	s.RecordAt(42, time.Unix(0, 0), "t1", StepSend, "s", nil)
	var nilSink *Sink
	nilSink.Record("t1", StepExit, "never", nil)
	b.WriteString("\n{\"trace\":\"t1\",\"side\":\"guest\",\"step\":\"ex") // a torn last line
	evs, bad, err := Parse(&b)
	if err != nil || bad != 1 || len(evs) != 2 {
		t.Fatalf("Parse = %d events, %d bad, %v", len(evs), bad, err)
	}
	if e := evs[1]; e.Mono != 42 || e.Side != SideGuest || e.Trace != "t1" || e.Step != StepSend || e.PID != os.Getpid() {
		t.Errorf("event = %+v", e)
	}
	if evs[0].Data["n"] != 1.0 || evs[0].Mono <= 0 {
		t.Errorf("event = %+v", evs[0])
	}
}

func TestFileRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "relay-trace.jsonl")
	f, err := OpenFile(p, 150)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSink(f, SideRelay)
	for i := 0; i < 3; i++ {
		s.RecordAt(int64(i), time.Unix(0, 0), "t", StepAccept, "x", nil) // ~110 bytes each
	}
	f.Close()
	if _, err := f.Write([]byte("x\n")); err == nil {
		t.Error("write after Close succeeded")
	}
	evs, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The first two rotated away in turn: .1 holds the second, the file the third.
	if len(evs) != 2 || evs[0].Mono != 1 || evs[1].Mono != 2 {
		t.Fatalf("events after rotation: %+v", evs)
	}
	if evs, err := ReadFile(filepath.Join(t.TempDir(), "missing")); err != nil || len(evs) != 0 {
		t.Errorf("missing file: %v, %v", evs, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"trace":"t","side":"guest","step":"exit","mono_ns":1,"wall":"2026-01-01T00:00:00Z","text":"x"}` + "\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, _, err := Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, e := range evs {
			if e.Trace == "" || e.Side == "" || e.Step == "" {
				t.Fatalf("accepted an event without trace, side or step: %+v", e)
			}
		}
		Merge(evs, evs) // never panics on what Parse accepts
	})
}
