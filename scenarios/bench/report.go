package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"strings"
)

// WriteText prints every figure next to its baselines.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "lab bench, %s, accel %s, vsock %s\n\n", r.Time.UTC().Format("2006-01-02 15:04 UTC"), r.Accel, r.Vsock)
	r.writeAims(w)
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
	}
	r.writeBreakdown(w)
	fmt.Fprintf(w, "\nthroughput (MiB/s)                                %9s %9s\n", "MiB", "MiB/s")
	rrow := func(name string, x Rate) {
		fmt.Fprintf(w, "  %-48s %9.0f %9.1f\n", name, float64(x.Bytes)/(1<<20), x.MiBps)
	}
	rrow("interop stdout (host program -> guest)", r.Throughput.InteropStdout)
	rrow("raw vsock host -> guest", r.Throughput.VsockHostGst)
	rrow("SSH pipe guest -> host (stdout of lab exec)", r.Throughput.SSHGstHost)
	rrow("interop stdin (guest -> host program)", r.Throughput.InteropStdin)
	rrow("raw vsock guest -> host", r.Throughput.VsockGstHost)
	rrow("SSH pipe host -> guest (stdin of lab exec)", r.Throughput.SSHHostGst)
	c := r.Concurrent
	fmt.Fprintf(w, "\n%d concurrent launches: %.0f ms wall, %d ok, %d failed; hostagent (relay + vsock backend) peak RSS %.1f MiB\n",
		c.N, c.WallMS, c.OK, c.Failed, c.RelayRSSMiB)
	for _, e := range c.Errors {
		fmt.Fprintf(w, "  %s\n", e)
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

// WriteJSON writes the result as JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSVG draws two bar charts: launch p50/p99 and throughput, each figure beside its
// baselines.
func (r *Result) WriteSVG(w io.Writer) error {
	type bar struct {
		label string
		v, v2 float64 // v2: a second, lighter bar (p99)
	}
	launch := []bar{
		{"interop", r.Launch.Interop.P50, r.Launch.Interop.P99},
		{"guest native", r.Launch.GuestNative.P50, r.Launch.GuestNative.P99},
		{"host native", r.Launch.HostNative.P50, r.Launch.HostNative.P99},
		{"guest->host SSH exec", r.Launch.SSHGuestHost.P50, r.Launch.SSHGuestHost.P99},
		{"lab exec", r.Launch.LabExec.P50, r.Launch.LabExec.P99},
		{"PE interop", r.Launch.PEInterop.P50, r.Launch.PEInterop.P99},
		{"PE Wine on host", r.Launch.PEHost.P50, r.Launch.PEHost.P99},
	}
	tput := []bar{
		{"interop stdout", r.Throughput.InteropStdout.MiBps, 0},
		{"raw vsock h->g", r.Throughput.VsockHostGst.MiBps, 0},
		{"SSH pipe g->h", r.Throughput.SSHGstHost.MiBps, 0},
		{"interop stdin", r.Throughput.InteropStdin.MiBps, 0},
		{"raw vsock g->h", r.Throughput.VsockGstHost.MiBps, 0},
		{"SSH pipe h->g", r.Throughput.SSHHostGst.MiBps, 0},
	}
	const width, left, barH, gap = 760, 170, 18, 8
	var b strings.Builder
	y := 30
	section := func(title, unit string, bars []bar) {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y, html.EscapeString(title))
		y += 12
		var max float64
		for _, x := range bars {
			max = maxf(max, maxf(x.v, x.v2))
		}
		if max == 0 {
			max = 1
		}
		scale := float64(width-left-90) / max
		for _, x := range bars {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-5, html.EscapeString(x.label))
			if x.v2 > 0 {
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="#9ecae1"/>`+"\n", left, y, x.v2*scale, barH)
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="#3182bd"/>`+"\n", left, y, x.v*scale, barH)
			label := fmt.Sprintf("%.2f %s", x.v, unit)
			if x.v2 > 0 {
				label = fmt.Sprintf("p50 %.2f / p99 %.2f %s", x.v, x.v2, unit)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(left)+maxf(x.v, x.v2)*scale+6, y+barH-5, html.EscapeString(label))
			y += barH + gap
		}
		y += 24
	}
	section(fmt.Sprintf("Launch latency, ms (accel %s, vsock %s)", r.Accel, r.Vsock), "ms", launch)
	section("Pipe throughput, MiB/s", "MiB/s", tput)
	_, err := fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n"+
		`<rect width="100%%" height="100%%" fill="white"/>`+"\n%s</svg>\n", width+140, y, b.String())
	return err
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}
