package bench

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"lab/trace"
)

// tracedRun builds one launch's records as the interpreter and the relay write them, in
// ms on each side's clock; the relay's clock runs off later than the guest's and the
// handshake is symmetric (20 ms each way), so the merge places relay steps exactly.
func tracedRun(id string, base, relayOff int64, firstOutput bool) (guest, relay []trace.Event) {
	ms := int64(1e6)
	g := func(step string, t int64, data map[string]any) {
		guest = append(guest, trace.Event{Trace: id, Side: trace.SideGuest, Step: step, Mono: (base + t) * ms, Data: data})
	}
	r := func(step string, t int64) {
		relay = append(relay, trace.Event{Trace: id, Side: trace.SideRelay, Step: step, Mono: (relayOff + base + t) * ms})
	}
	g(trace.StepArgv, 100, nil)
	g(trace.StepBinfmt, 110, nil)
	g(trace.StepConfig, 120, nil)
	g(trace.StepFile, 125, nil)
	g(trace.StepEnv, 130, nil)
	g(trace.StepConnect, 200, map[string]any{"connect_ns": float64(50 * ms)}) // as JSON decodes it
	g(trace.StepSend, 210, nil)
	g(trace.StepResult, 300, nil)
	g(trace.StepExit, 400, nil)
	r(trace.StepAccept, 160)
	r(trace.StepHello, 220)
	r(trace.StepLaunch, 230)
	r(trace.StepDecision, 240)
	r(trace.StepCwd, 245)
	r(trace.StepStart, 270)
	r(trace.StepHostEnv, 271)
	r(trace.StepReply, 280)
	if firstOutput {
		r(trace.StepFirstOutput, 330)
	}
	r(trace.StepProgramExit, 360)
	r(trace.StepExit, 380)
	return guest, relay
}

func TestComputeBreakdown(t *testing.T) {
	g1, r1 := tracedRun("aaaa", 0, 5000, false)
	g2, r2 := tracedRun("bbbb", 1000, 5000, true)
	// The probe's lines: fork 50 ms before the interpreter's first step, reap 50 ms after its last.
	out := "run 50000000 450000000\nns 3\nrun 1050000000 1450000000\n"
	runs, err := parseTraced(out)
	if err != nil {
		t.Fatal(err)
	}
	// Relay records of another launch in the relay's file are ignored.
	_, other := tracedRun("cccc", 3000, 5000, true)
	ls := matchRuns(runs, append(g1, g2...), append(append(r1, other...), r2...))
	if len(ls) != 2 {
		t.Fatalf("matched %d runs; want 2", len(ls))
	}
	b := computeBreakdown("host-true", ls)
	type ph struct {
		name string
		n    int
		p50  float64
	}
	want := []ph{
		{"fork, execve of the interpreter (binfmt_misc), Go runtime start", 2, 50},
		{"trace only: scan of the binfmt_misc rules", 2, 10},
		{"config read (/etc/lab/interop.conf)", 2, 10},
		{"file head, format, LABENV selection", 2, 10},
		{"token read, terminal check", 2, 20},
		{"vsock connect", 2, 50},
		{"session set-up, Hello+Launch written", 2, 10},
		{"frames to the relay, Hello read, token checked", 2, 10},
		{"Launch read", 2, 10},
		{"authorisation and mapping (allow list or share, path, env)", 2, 10},
		{"working directory mapping", 2, 5},
		{"fork/exec of the host program", 2, 25},
		{"LaunchResult out", 2, 10},
		{"LaunchResult to the guest", 2, 20},
		{"program start to its first output byte", 1, 30},
		// Run 1 has no first output: its phase is start of the program to exit (80 ms),
		// run 2's from the first output (30 ms); p50 of two is the lower.
		{"program runs to its exit (wait status ready)", 2, 30},
		{"program exit to outputs drained (EOF or drain deadline)", 2, 20},
		{"Exit to the guest, output written", 2, 20},
		{"interpreter exits, parent reaps it", 2, 50},
	}
	if len(b.Phases) != len(want) {
		t.Fatalf("%d phases; want %d: %+v", len(b.Phases), len(want), b.Phases)
	}
	for i, w := range want {
		p := b.Phases[i]
		if p.Name != w.name || p.N != w.n || p.P50 != w.p50 {
			t.Errorf("phase %d = %q n %d p50 %v; want %q n %d p50 %v", i, p.Name, p.N, p.P50, w.name, w.n, w.p50)
		}
	}
	if b.Runs != 2 || b.Total.P50 != 400 || b.Clock.P50 != 20 {
		t.Errorf("runs %d, total p50 %v, clock error p50 %v; want 2, 400, 20", b.Runs, b.Total.P50, b.Clock.P50)
	}
	var r Result
	r.Breakdown = []Breakdown{b}
	var txt bytes.Buffer
	r.writeBreakdown(&txt)
	for _, line := range []string{
		"breakdown: host-true, 2 traced runs (ms, guest clock; relay steps placed by the handshake, error p50 ±20.000 ms)",
		"  host   fork/exec of the host program                                       25.000    25.000   6.2%",
		"         total, probe fork to reap (traced)                                 400.000   400.000",
	} {
		if !strings.Contains(txt.String(), line+"\n") {
			t.Errorf("no line %q in:\n%s", line, txt.String())
		}
	}
}

func TestParseTracedBad(t *testing.T) {
	_, err := parseTraced("run 20 10\n")
	if err == nil || err.Error() != `bench: the probe printed a bad run line "run 20 10"` {
		t.Errorf("err = %v", err)
	}
}

func TestParseBootPhases(t *testing.T) {
	// /proc/PID/stat: pid (comm) state, then fields 4.. ; field 22 (starttime) is the 20th
	// after the command.
	stat := func(comm string, start int) string {
		f := []string{"S"}
		for i := 4; i <= 52; i++ {
			v := "0"
			if i == 22 {
				v = strconv.Itoa(start)
			}
			f = append(f, v)
		}
		return "412 (" + comm + ") " + strings.Join(f, " ")
	}
	out := "4.20 1.00\n100\n[    0.912000] Run /init as init process\n" + stat("sshd", 250) + "\n\n" + stat("sshd: root [priv]", 390) + "\n\n"
	up, k, u := parseBootPhases(out)
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if !near(up, 4.2) || !near(k, 0.912) || !near(u, 1.588) {
		t.Errorf("uptime %v, kernel %v, userspace %v; want 4.2, 0.912, 1.588", up, k, u)
	}
	if s, k, u := parseBootPhases("4.20 1.00\n100\n" + stat("sshd", 250) + "\n"); k != 0 || u != 0 || s != 0 {
		t.Errorf("without the kernel's line: %v %v %v; want zeros", k, u, s)
	}
}

// A guest clock that jumped gives a negative phase: the phases are dropped, saying why, and
// the host-timed total stays.
func TestDropClockJumps(t *testing.T) {
	var r Result
	r.Boot.TotalSeconds, r.Boot.BeforeQEMUSeconds, r.Boot.FirmwareSeconds, r.Boot.KernelSeconds = 20, 0.1, -805.67, 2
	r.Boot.UserspaceSeconds, r.Boot.SSHDSeconds = 1, 1
	r.dropClockJumps()
	b := r.Boot
	if b.FirmwareSeconds != 0 || b.KernelSeconds != 0 || b.BeforeQEMUSeconds != 0 || b.TotalSeconds != 20 {
		t.Errorf("boot after a clock jump: %+v", b)
	}
	want := "boot phases: the guest's clock disagrees with the host's (QEMU to kernel -805.67 s, sshd to SSH ready 1.00 s): phases not reported"
	if len(r.Failures) != 1 || r.Failures[0] != want {
		t.Errorf("failures %q, want %q", r.Failures, want)
	}
	var ok Result
	ok.Boot.FirmwareSeconds, ok.Boot.KernelSeconds = 1.5, 2
	ok.dropClockJumps()
	if ok.Boot.FirmwareSeconds != 1.5 || len(ok.Failures) != 0 {
		t.Errorf("sane phases changed: %+v %q", ok.Boot, ok.Failures)
	}
}
