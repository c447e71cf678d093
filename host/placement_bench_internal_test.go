package host

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"lab/host/proctree"
	"lab/internal/labtest"
	"lab/trace"
)

// BenchmarkProgramPlacement times a trivial Go program (the test fixture's `true`) from
// just before its start to the moment its exit is seen, started as the relay starts host
// programs (pipes or a pty, its own group or session, the signal reset, the process tree
// in cgroup or fallback mode) and, interleaved in the same loop, directly with os/exec
// (exec.Cmd.Run, /dev/null stdio): the relay's placement cost without a VM or a guest.
//
//	go test -run '^$' -bench ProgramPlacement -benchtime 200x ./host
func BenchmarkProgramPlacement(b *testing.B) {
	dir := b.TempDir()
	prog := filepath.Join(dir, "true")
	if err := labtest.GoBuild(prog, "./testdata/fixture", false); err != nil {
		b.Fatal(err)
	}
	cg, err := proctree.Open(proctree.Options{Name: "benchplace", Mode: proctree.ModeCgroup})
	if err != nil {
		b.Logf("no cgroup mode: %v", err)
		cg = nil
	}
	defer cg.Close()
	fb, err := proctree.Open(proctree.Options{Name: "benchplacefb", Mode: proctree.ModeFallback})
	if err != nil {
		b.Fatal(err)
	}
	defer fb.Close()

	type variant struct {
		name string
		run  func() (start, run time.Duration)
	}
	relayStart := func(tree *proctree.Tree, tty bool) func() (time.Duration, time.Duration) {
		r := newReaper()
		r.procs = tree
		return func() (time.Duration, time.Duration) {
			cmd := &exec.Cmd{Path: prog, Args: []string{"true"}, Dir: dir, Env: hostEnv(os.Environ(), nil, nil)}
			var ws *WinSize
			if tty {
				ws = &WinSize{Rows: 24, Cols: 80}
			}
			t0 := trace.Mono()
			p, err := startProcess(cmd, ws, 500*time.Millisecond, r)
			if err != nil {
				b.Fatal(err)
			}
			t1 := trace.Mono()
			go p.afterExit()
			<-p.exited
			t2 := p.exitMono
			if st := p.reap(); st.Code != 0 || st.Signal != 0 {
				b.Fatalf("true: %v", st)
			}
			return time.Duration(t1 - t0), time.Duration(t2 - t1)
		}
	}
	vs := []variant{
		{"direct", func() (time.Duration, time.Duration) {
			cmd := exec.Command(prog)
			cmd.Args[0] = "true"
			cmd.Dir = dir
			t0 := trace.Mono()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			t1 := trace.Mono()
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			return time.Duration(t1 - t0), time.Duration(trace.Mono() - t1)
		}},
		{"pipes-notree", relayStart(nil, false)},
		{"pipes-fallback", relayStart(fb, false)},
		{"pty-notree", relayStart(nil, true)},
	}
	if cg != nil {
		vs = append(vs, variant{"pipes-cgroup", relayStart(cg, false)}, variant{"pty-cgroup", relayStart(cg, true)})
	}
	starts := make([][]float64, len(vs))
	runs := make([][]float64, len(vs))
	for b.Loop() {
		for i, v := range vs {
			s, r := v.run()
			starts[i] = append(starts[i], float64(s.Nanoseconds())/1e6)
			runs[i] = append(runs[i], float64(r.Nanoseconds())/1e6)
		}
	}
	p50 := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for i, v := range vs {
		b.ReportMetric(p50(starts[i]), v.name+"-start-p50-ms")
		b.ReportMetric(p50(runs[i]), v.name+"-run-p50-ms")
	}
	b.ReportMetric(0, "ns/op")
}
