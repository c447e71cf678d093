package host_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"lab/pefixtures"
	"lab/trace"
	"lab/wineprefix"
)

// BenchmarkPELaunch compares, warm (the prefix's agent keeps its wineserver, as `lab up`
// leaves it), a trivial PE program (pefixtures' echoargs.exe) run three ways, interleaved:
// `wine` on the host with stdio on /dev/null (lab bench's baseline), `wine` on the host
// with stdout/stderr on pipes read to EOF (what the relay gives Wine), and through interop
// on the Unix transport, traced, so it also reports the relay's start to program exit and
// program exit to outputs drained:
//
//	go test -run '^$' -bench PELaunch -benchtime 30x ./host
func BenchmarkPELaunch(b *testing.B) {
	loader, err := wineprefix.Loader("")
	if err != nil {
		b.Skip("wine is not installed")
	}
	ctx := context.Background()
	fx, err := pefixtures.Build(ctx, b.TempDir())
	if err != nil {
		b.Skipf("cannot build the PE fixtures: %v", err)
	}
	prefixDir := filepath.Join(b.TempDir(), "wineprefix")
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: prefixDir})
	if err != nil {
		b.Fatal(err)
	}
	lease, err := p.Use(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		lease.Release()
		p.StopUnused(context.Background())
	})
	w := newWorld(b, "--log-level", "warn", "--wine", loader, "--wine-prefix", prefixDir, "--trace-file", filepath.Join(prefixDir, "relay-trace.jsonl"))
	exe, _ := os.ReadFile(fx[pefixtures.EchoArgs])
	for _, dir := range []string{w.hostShare, w.guestShare} {
		if err := os.WriteFile(filepath.Join(dir, "echoargs.exe"), exe, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	hostExe := filepath.Join(w.hostShare, "echoargs.exe")
	guestTrace := filepath.Join(w.root, "guest-trace.jsonl")
	var null, pipes, interop, pipeExit []float64
	run := func() {
		t := time.Now()
		if err := p.Command(ctx, hostExe).Run(); err != nil {
			b.Fatal(err)
		}
		lap(&null, t)

		t = time.Now()
		cmd := p.Command(ctx, hostExe)
		cmd.WaitDelay = 0
		r, wr, _ := os.Pipe()
		cmd.Stdout, cmd.Stderr = wr, wr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		wr.Close()
		exited := make(chan time.Time, 1)
		go func() { cmd.Process.Wait(); exited <- time.Now() }()
		io.Copy(io.Discard, r)
		eof := time.Now()
		r.Close()
		x := <-exited
		end := eof
		if x.After(eof) {
			end = x
		}
		pipes = append(pipes, float64(end.Sub(t).Nanoseconds()))
		pipeExit = append(pipeExit, float64(eof.Sub(x).Nanoseconds()))

		t = time.Now()
		cmd = exec.Command(bin.interop, filepath.Join(w.guestShare, "echoargs.exe"), "echoargs.exe")
		cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config, "LAB_TRACE="+guestTrace)
		cmd.Dir = w.guestShare
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		lap(&interop, t)
	}
	for range 3 {
		run()
	}
	null, pipes, interop, pipeExit = nil, nil, nil, nil
	os.Truncate(filepath.Join(prefixDir, "relay-trace.jsonl"), 0) // the relay appends (O_APPEND)
	for b.Loop() {
		run()
	}
	q := msQuantile
	b.ReportMetric(q(null, 0.5), "wine-null-p50-ms")
	b.ReportMetric(q(pipes, 0.5), "wine-pipes-p50-ms")
	b.ReportMetric(q(pipeExit, 0.5), "wine-pipes-exit-to-eof-p50-ms")
	b.ReportMetric(q(interop, 0.5), "interop-p50-ms")
	b.ReportMetric(q(null, 0.99), "wine-null-p99-ms")
	b.ReportMetric(q(pipes, 0.99), "wine-pipes-p99-ms")
	b.ReportMetric(q(interop, 0.99), "interop-p99-ms")
	relay, err := trace.ReadFile(filepath.Join(prefixDir, "relay-trace.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	start, exit := map[string]int64{}, map[string]int64{}
	var run2exit, exit2drain []float64
	for _, e := range relay {
		switch e.Step {
		case trace.StepStart:
			start[e.Trace] = e.Mono
		case trace.StepProgramExit:
			exit[e.Trace] = e.Mono
		case trace.StepExit:
			if s, ok := start[e.Trace]; ok && exit[e.Trace] != 0 {
				run2exit = append(run2exit, float64(exit[e.Trace]-s))
				exit2drain = append(exit2drain, float64(e.Mono-exit[e.Trace]))
			}
		}
	}
	if len(run2exit) > 0 {
		b.ReportMetric(q(run2exit, 0.5), "relay-start-to-exit-p50-ms")
		b.ReportMetric(q(exit2drain, 0.5), "relay-exit-to-drained-p50-ms")
		b.ReportMetric(q(exit2drain, 0.99), "relay-exit-to-drained-p99-ms")
	}
	b.ReportMetric(0, "ns/op")
}
