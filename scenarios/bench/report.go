package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// WriteText prints every figure next to its baselines.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "lab bench, %s, accel %s, vsock %s\n\n", r.Time.UTC().Format("2006-01-02 15:04 UTC"), r.Accel, r.Vsock)
	r.writeAims(w)
	r.writeLaunch(w)
	r.writeThroughput(w)
	if r.measures(partConcurrent) {
		c := r.Concurrent
		fmt.Fprintf(w, "\n%d concurrent launches: %.0f ms wall, %d ok, %d failed; hostagent (relay + vsock backend) peak RSS %.1f MiB\n",
			c.N, c.WallMS, c.OK, c.Failed, c.RelayRSSMiB)
		for _, e := range c.Errors {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if r.Only == OnlyVsock {
		fmt.Fprintln(w)
	}
	b := r.Boot
	fmt.Fprintf(w, "boot to first interop exec: %.1f s (up %.1f s, provision + expose %.1f s, first exec %.2f s)\n",
		b.TotalSeconds, b.UpSeconds, b.ProvisionSeconds, b.FirstExecSeconds)
	if len(r.Failures) > 0 {
		fmt.Fprintln(w, "\nnot measured")
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	if len(r.Goals) > 0 {
		fmt.Fprintln(w, "\ngoals")
	}
	for _, g := range r.Goals {
		mark := "MET    "
		if !g.Met {
			mark = "MISSED "
		}
		fmt.Fprintf(w, "  %s %-50s want %s, got %.2f\n", mark, g.Name, g.Want, g.Got)
	}
	return nil
}

// writeLaunch prints the launch latencies and their breakdown, when the run measured them.
func (r *Result) writeLaunch(w io.Writer) {
	if !r.measures(partLaunch) {
		return
	}
	fmt.Fprintf(w, "launch latency of a trivial program (ms)           %6s %9s %9s %9s\n", "runs", "p50", "p99", "mean")
	row := func(name string, d Dist) {
		fmt.Fprintf(w, "  %-48s %6d %9.2f %9.2f %9.2f", name, d.N, d.P50, d.P99, d.Mean)
		if d.Note != "" {
			fmt.Fprintf(w, "  (%s)", d.Note)
		}
		fmt.Fprintln(w)
	}
	row("interop: guest runs the host program", r.Launch.Interop)
	row("same program natively in the guest", r.Launch.GuestNative)
	row("same program natively on the host", r.Launch.HostNative)
	row("guest -> host SSH exec of it (client process)", r.Launch.SSHGuestHost)
	row("lab exec -- true (host -> guest)", r.Launch.LabExec)
	if r.Launch.PEHost.N > 0 || r.Launch.PEInterop.N > 0 {
		row("PE: interop, guest runs /mnt/c/.../echoargs.exe", r.Launch.PEInterop)
		row("PE: the same file, Wine on the host", r.Launch.PEHost)
		if r.Launch.PEHostLoader.N > 0 {
			row("PE: the same, Wine started as the relay does", r.Launch.PEHostLoader)
		}
	}
	r.writeBreakdown(w)
}

// writeThroughput prints the rates the run measured: all of them, or raw vsock alone
// with --only vsock.
func (r *Result) writeThroughput(w io.Writer) {
	all := r.measures(partThroughput)
	if !all && !r.measures(partVsock) {
		return
	}
	fmt.Fprintf(w, "\nthroughput (MiB/s)                                %9s %9s\n", "MiB", "MiB/s")
	rrow := func(name string, x Rate) {
		fmt.Fprintf(w, "  %-48s %9.0f %9.1f\n", name, float64(x.Bytes)/(1<<20), x.MiBps)
	}
	if all {
		rrow("interop stdout (host program -> guest)", r.Throughput.InteropStdout)
	}
	rrow("raw vsock host -> guest", r.Throughput.VsockHostGst)
	if all {
		rrow("SSH pipe guest -> host (stdout of lab exec)", r.Throughput.SSHGstHost)
		rrow("interop stdin (guest -> host program)", r.Throughput.InteropStdin)
	}
	rrow("raw vsock guest -> host", r.Throughput.VsockGstHost)
	if all {
		rrow("SSH pipe host -> guest (stdin of lab exec)", r.Throughput.SSHHostGst)
	}
}

// ReadJSON reads a result WriteJSON wrote, recomputing the aims (an older run's file
// may not have them).
func ReadJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: %s is not lab bench --json output: %w", path, err)
	}
	r.Aims = r.aims()
	return &r, nil
}

// WriteJSON writes the result as JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}
