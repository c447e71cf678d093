package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"lab/internal/shell"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"lab/machine"
	"lab/pefixtures"
	"lab/trace"
	"lab/vm"
)

// Phase is one stretch of an interop launch, between two recorded steps, over the
// traced runs.
type Phase struct {
	Side string `json:"side"` // who spends the time: guest, relay, host (the program), wire
	Name string `json:"name"`
	Dist
}

// Breakdown is where the time of one kind of interop launch goes (lab bench
// --breakdown): the runs are traced (the interpreter's and the relay's lab trace
// records, merged on the guest's clock as lab trace merges them) and timed by the
// guest probe from just before its fork to just after its wait.
type Breakdown struct {
	Program string   `json:"program"`
	Runs    int      `json:"runs"`
	Total   Dist     `json:"total"`  // probe fork to reap, traced
	Phases  []Phase  `json:"phases"` // in order; their p50s add up to about Total's (a relay step placed early within the clock's error makes a phase negative)
	Clock   Dist     `json:"clock_uncertainty"`
	Notes   []string `json:"notes,omitempty"`
}

// boundary is a recorded step that ends a phase; at finds it in one launch's steps
// (guest clock, ns), or reports it absent.
type boundary struct {
	side, name string
	at         func(l *launchSteps) (int64, bool)
}

// launchSteps are one traced run: the probe's fork and reap times and the merged steps.
type launchSteps struct {
	t0, t1 int64
	steps  []trace.Step // on the guest's clock; Mono of relay steps is already moved to it
	clock  trace.Clock
}

// step finds a step: the relay's first (the first output of either stream), the
// guest's last (a retried launch connected and sent again; the relay records only the
// attempt it served).
func (l *launchSteps) step(side, step string) (trace.Step, bool) {
	var found trace.Step
	ok := false
	for _, s := range l.steps {
		if s.Side == side && s.Step == step && (!ok || side == trace.SideGuest) {
			found, ok = s, true
		}
	}
	return found, ok
}

func stepAt(side, step string) func(*launchSteps) (int64, bool) {
	return func(l *launchSteps) (int64, bool) {
		s, ok := l.step(side, step)
		return s.Mono, ok
	}
}

// phases, each ending at its boundary; the first starts at the probe's fork.
var phases = []boundary{
	{"guest", "fork, execve of the interpreter (binfmt_misc), Go runtime start", stepAt(trace.SideGuest, trace.StepArgv)},
	{"guest", "trace only: scan of the binfmt_misc rules", stepAt(trace.SideGuest, trace.StepBinfmt)},
	{"guest", "config read (/etc/lab/interop.conf)", stepAt(trace.SideGuest, trace.StepConfig)},
	{"guest", "file head, format, LABENV selection", stepAt(trace.SideGuest, trace.StepEnv)},
	{"guest", "token read, terminal check", func(l *launchSteps) (int64, bool) {
		s, ok := l.step(trace.SideGuest, trace.StepConnect)
		if !ok {
			return 0, false
		}
		ns, ok := s.Data["connect_ns"].(float64)
		return s.Mono - int64(ns), ok
	}},
	{"wire", "vsock connect", stepAt(trace.SideGuest, trace.StepConnect)},
	{"guest", "session set-up, Hello+Launch written", stepAt(trace.SideGuest, trace.StepSend)},
	{"relay", "frames to the relay, Hello read, token checked", stepAt(trace.SideRelay, trace.StepHello)},
	{"relay", "Launch read", stepAt(trace.SideRelay, trace.StepLaunch)},
	{"relay", "authorisation and mapping (allow list or share, path, env)", stepAt(trace.SideRelay, trace.StepDecision)},
	{"relay", "working directory mapping", stepAt(trace.SideRelay, trace.StepCwd)},
	{"host", "fork/exec of the host program", stepAt(trace.SideRelay, trace.StepStart)},
	{"relay", "LaunchResult out", stepAt(trace.SideRelay, trace.StepReply)},
	{"wire", "LaunchResult to the guest", stepAt(trace.SideGuest, trace.StepResult)},
	{"host", "program start to its first output byte", stepAt(trace.SideRelay, trace.StepFirstOutput)},
	{"host", "program runs to its exit (wait status ready)", stepAt(trace.SideRelay, trace.StepProgramExit)},
	{"relay", "program exit to outputs drained (EOF or drain deadline)", stepAt(trace.SideRelay, trace.StepExit)},
	{"wire", "Exit to the guest, output written", stepAt(trace.SideGuest, trace.StepExit)},
	{"guest", "interpreter exits, parent reaps it", func(l *launchSteps) (int64, bool) { return l.t1, true }},
}

// computeBreakdown turns traced runs into phases. A boundary missing from a run (a
// program that writes nothing has no first output) leaves that run out of its phase;
// the next phase then starts at the last boundary the run had. Phases no run had are
// left out.
func computeBreakdown(program string, runs []launchSteps) Breakdown {
	b := Breakdown{Program: program, Runs: len(runs)}
	per := make([][]float64, len(phases))
	var total, unc []float64
	for i := range runs {
		l := &runs[i]
		last := l.t0
		for j, p := range phases {
			at, ok := p.at(l)
			if !ok {
				continue
			}
			per[j] = append(per[j], float64(at-last))
			last = at
		}
		total = append(total, float64(l.t1-l.t0))
		if l.clock.Method == trace.ClockHandshake {
			unc = append(unc, float64(l.clock.UncertaintyNS))
		}
	}
	for j, p := range phases {
		if len(per[j]) > 0 {
			b.Phases = append(b.Phases, Phase{Side: p.side, Name: p.name, Dist: dist(per[j])})
		}
	}
	b.Total, b.Clock = dist(total), dist(unc)
	if len(unc) < len(runs) {
		b.Notes = append(b.Notes, fmt.Sprintf("%d of %d runs had no complete handshake record: their relay steps are placed less exactly", len(runs)-len(unc), len(runs)))
	}
	if len(runs) > 0 {
		if s, ok := runs[0].step(trace.SideRelay, trace.StepStart); ok && s.Data["path"] != nil {
			argv, _ := s.Data["argv"].([]any)
			how := "pipes"
			if tty, _ := s.Data["tty"].(bool); tty {
				how = "a pty"
			}
			b.Notes = append(b.Notes, fmt.Sprintf("host program: %v %v on %s", s.Data["path"], argv, how))
		}
	}
	return b
}

// parseTraced reads the probe's "run T0 T1" lines.
func parseTraced(out string) ([][2]int64, error) {
	var runs [][2]int64
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "run" {
			continue
		}
		t0, err0 := strconv.ParseInt(f[1], 10, 64)
		t1, err1 := strconv.ParseInt(f[2], 10, 64)
		if err0 != nil || err1 != nil || t1 < t0 {
			return nil, fmt.Errorf("bench: the probe printed a bad run line %q", l)
		}
		runs = append(runs, [2]int64{t0, t1})
	}
	return runs, nil
}

// matchRuns pairs each probe run with the launch whose interpreter started inside it.
func matchRuns(runs [][2]int64, guest, relay []trace.Event) []launchSteps {
	tl := trace.Merge(guest, relay)
	byLaunch := map[int][]trace.Step{}
	for _, s := range tl.Steps {
		if s.Side == trace.SideRelay {
			// Relay steps on the guest's clock (Merge keeps each side's own Mono).
			s.Mono -= tl.Launches[s.Launch-1].OffsetNS
		}
		byLaunch[s.Launch] = append(byLaunch[s.Launch], s)
	}
	var out []launchSteps
	for _, r := range runs {
		for n, c := range tl.Launches {
			steps := byLaunch[n+1]
			argv := firstGuest(steps)
			if argv >= r[0] && argv <= r[1] {
				out = append(out, launchSteps{t0: r[0], t1: r[1], steps: steps, clock: c})
				break
			}
		}
	}
	return out
}

func firstGuest(steps []trace.Step) int64 {
	first := int64(-1)
	for _, s := range steps {
		if s.Side == trace.SideGuest && (first < 0 || s.Mono < first) {
			first = s.Mono
		}
	}
	return first
}

// guestTraceFile is where the traced runs' interpreters write their steps, on the
// guest's tmpfs.
const guestTraceFile = "/tmp/lab-bench-trace.jsonl"

// traceLaunches runs prog n times traced and breaks its launches down.
func traceLaunches(ctx context.Context, c *vm.Client, stateDir, gprobe string, n int, prog ...string) (Breakdown, error) {
	if err := guestOK(ctx, c, "rm -f "+guestTraceFile); err != nil {
		return Breakdown{}, err
	}
	var out bytes.Buffer
	cmd := gprobe + " traced " + strconv.Itoa(n) + " " + guestTraceFile + " " + shell.Join(prog)
	if _, err := runOK(ctx, c, cmd, nil, &out); err != nil {
		return Breakdown{}, err
	}
	runs, err := parseTraced(out.String())
	if err != nil {
		return Breakdown{}, err
	}
	raw, err := c.Output(ctx, "cat "+guestTraceFile+"; rm -f "+guestTraceFile)
	if err != nil {
		return Breakdown{}, fmt.Errorf("bench: reading the guest's trace: %w", err)
	}
	gev, _, err := trace.Parse(bytes.NewReader(raw))
	if err != nil {
		return Breakdown{}, err
	}
	rev, err := trace.ReadFile(filepath.Join(stateDir, machine.FileRelayTrace))
	if err != nil {
		return Breakdown{}, err
	}
	ls := matchRuns(runs, gev, rev)
	if len(ls) < len(runs) {
		return Breakdown{}, fmt.Errorf("bench: %d of %d traced runs left no interpreter record in the guest (is the interop rule the interpreter?)", len(runs)-len(ls), len(runs))
	}
	return computeBreakdown(strings.Join(prog, " "), ls), nil
}

// breakdowns traces the launch figures' programs: the trivial host program, one that
// writes a line (its first output byte), and the PE program when that figure ran.
func breakdowns(ctx context.Context, c *vm.Client, stateDir, gprobe string, opts Options, res *Result) {
	n := min(opts.Runs, 100)
	progs := [][]string{{"host-true"}, {"host-echo", "x"}}
	if res.Launch.PEInterop.N > 0 {
		progs = append(progs, []string{path.Join(machine.DriveCGuest, "lab-bench", pefixtures.EchoArgs)})
	}
	for _, p := range progs {
		opts.say("breakdown: %d traced launches of %s", n, strings.Join(p, " "))
		b, err := traceLaunches(ctx, c, stateDir, gprobe, n, p...)
		if err != nil {
			res.Failures = append(res.Failures, "breakdown of "+strings.Join(p, " ")+": "+err.Error())
			continue
		}
		res.Breakdown = append(res.Breakdown, b)
	}
}

// writeBreakdown prints the phases of each traced launch.
func (r *Result) writeBreakdown(w io.Writer) {
	for _, b := range r.Breakdown {
		fmt.Fprintf(w, "\nbreakdown: %s, %d traced runs (ms, guest clock; relay steps placed by the handshake, error p50 ±%.3f ms)\n", b.Program, b.Runs, b.Clock.P50)
		fmt.Fprintf(w, "  %-5s  %-64s %9s %9s %6s\n", "side", "phase", "p50", "p99", "p50 %")
		var sum float64
		for _, p := range b.Phases {
			sum += p.P50
		}
		for _, p := range b.Phases {
			share := 0.0
			if sum > 0 {
				share = 100 * p.P50 / sum
			}
			fmt.Fprintf(w, "  %-5s  %-64s %9.3f %9.3f %5.1f%%\n", p.Side, p.Name, p.P50, p.P99, share)
		}
		fmt.Fprintf(w, "  %-5s  %-64s %9.3f %9.3f\n", "", "total, probe fork to reap (traced)", b.Total.P50, b.Total.P99)
		untraced := r.Launch.Interop
		if strings.HasSuffix(b.Program, ".exe") {
			untraced = r.Launch.PEInterop
		}
		if untraced.N > 0 && (b.Program == "host-true" || strings.HasSuffix(b.Program, ".exe")) {
			fmt.Fprintf(w, "  untraced, same run: p50 %.3f ms, p99 %.3f ms (tracing's own cost is the difference)\n", untraced.P50, untraced.P99)
		}
		for _, n := range b.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
}
