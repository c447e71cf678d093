package bench

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"lab/images"
)

func TestDist(t *testing.T) {
	var ns []float64
	for i := 1; i <= 200; i++ {
		ns = append(ns, float64(i)*1e6)
	}
	d := dist(ns)
	if d.N != 200 || d.P50 != 100 || d.P99 != 198 || d.Mean != 100.5 {
		t.Errorf("dist = %+v", d)
	}
	if d := dist(nil); d.N != 0 {
		t.Errorf("empty dist = %+v", d)
	}
}

func TestParseKV(t *testing.T) {
	m := parseKV("ns 10\nns 20\nbytes 5\ngarbage\nok x\n")
	if len(m["ns"]) != 2 || m["bytes"][0] != 5 || len(m["ok"]) != 0 {
		t.Errorf("parseKV = %v", m)
	}
}

func TestReports(t *testing.T) {
	var r Result
	r.Launch.Interop = Dist{N: 200, P50: 2, P99: 5}
	r.Launch.SSHGuestHost = Dist{N: 200, P50: 20, P99: 40}
	r.Throughput.InteropStdout = Rate{Bytes: 64 << 20, MiBps: 90}
	r.Throughput.VsockHostGst = Rate{Bytes: 64 << 20, MiBps: 100}
	r.goals()
	if len(r.Goals) != 2 || !r.Goals[0].Met || !r.Goals[1].Met {
		t.Errorf("goals = %+v", r.Goals)
	}
	var txt bytes.Buffer
	r.WriteText(&txt)
	if !strings.Contains(txt.String(), "MET") || !strings.Contains(txt.String(), "guest -> host SSH exec") {
		t.Errorf("text:\n%s", txt.String())
	}
}

func TestOptionsOnly(t *testing.T) {
	for _, tc := range []struct {
		only, err string
	}{
		{"", ""},
		{"concurrent", ""},
		{"boot", ""},
		{"vsock", ""},
		{"launch", `bench: --only "launch": the figures that can run alone are "boot", "concurrent" and "vsock"`},
	} {
		o := Options{Only: tc.only, LabExe: "lab"}
		err := o.setDefaults()
		if got := fmt.Sprint(err); tc.err == "" && err != nil || tc.err != "" && got != tc.err {
			t.Errorf("Only %q: setDefaults() = %v, want %q", tc.only, err, tc.err)
		}
	}
}

// TestBootAimByDistro: the Debian guest's boot is judged against issue 13's 15 s, the
// initramfs's against 4.5 s, and the Debian image's figures are in the baselines.
func TestBootAimByDistro(t *testing.T) {
	foreign := images.ARM64
	if images.DefaultArch() == images.ARM64 {
		foreign = images.AMD64
	}
	for _, tc := range []struct {
		distro string
		arch   string
		total  float64
		limit  float64
		met    bool
	}{
		{"", "", 12, 4.5, false},
		{"", "", 4, 4.5, true},
		{"", images.DefaultArch(), 12, 4.5, false},
		{images.DistroDebian, "", 12, 15, true},
		{images.DistroDebian, "", 16, 15, false},
		{"", foreign, 12, 15, true},
		{"", foreign, 16, 15, false},
	} {
		var r Result
		r.Image.Distro, r.Image.Arch = tc.distro, tc.arch
		r.Image.BuildSeconds, r.Image.FreshDiskMB = 130, 42
		r.Boot.TotalSeconds = tc.total
		boot := aimOf(r, "boot to first interop exec")
		if boot == nil {
			t.Fatal("no boot aim")
		}
		if boot.Limit != tc.limit || boot.Met != tc.met {
			t.Errorf("%q %q boot %.0f s: limit %.1f met %v, want %.1f %v", tc.distro, tc.arch, tc.total, boot.Limit, boot.Met, tc.limit, tc.met)
		}
		if hasImage := strings.Contains(boot.Baselines, "clean build 130 s") && strings.Contains(boot.Baselines, "disk 42 MB"); hasImage != (tc.distro != "") {
			t.Errorf("%q: baselines %q", tc.distro, boot.Baselines)
		}
	}
}

// TestPEBaselines: the PE aim is against `wine` on the host; Wine started as the relay
// starts it is printed beside it (aims line and launch table) when it was measured, and
// an earlier run's JSON without it reports as before.
func TestPEBaselines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		loader Dist
		want   string
		row    bool
	}{
		{"measured", Dist{N: 50, P50: 150, P99: 190}, "wine on the host p50 171.50 ms (p99 210.00); Wine started as the relay does p50 150.00 ms (p99 190.00)", true},
		{"earlier run", Dist{}, "wine on the host p50 171.50 ms (p99 210.00)", false},
	} {
		var r Result
		r.Launch.PEInterop = Dist{N: 50, P50: 200, P99: 260}
		r.Launch.PEHost = Dist{N: 50, P50: 171.5, P99: 210}
		r.Launch.PEHostLoader = tc.loader
		pe := aimOf(r, "PE launch through interop")
		if pe == nil {
			t.Fatalf("%s: no PE aim", tc.name)
		}
		if pe.Baselines != tc.want || math.Abs(pe.Limit-205.8) > 1e-9 || !pe.Met {
			t.Errorf("%s: PE aim limit %.2f met %v baselines %q, want %.2f true %q", tc.name, pe.Limit, pe.Met, pe.Baselines, 1.2*171.5, tc.want)
		}
		var txt bytes.Buffer
		r.WriteText(&txt)
		if got := strings.Contains(txt.String(), "PE: the same, Wine started as the relay does"); got != tc.row {
			t.Errorf("%s: launch table has the relay's Wine row: %v, want %v\n%s", tc.name, got, tc.row, txt.String())
		}
	}
}

// TestReportOnly: a run with --only prints the figures it measured and nothing else (no
// "NO FIG" rows, no tables of zeros for what it skipped); a full run still shows a figure
// it failed to measure as NO FIG.
func TestReportOnly(t *testing.T) {
	measured := func(only string) *Result {
		r := &Result{Only: only}
		r.Boot.TotalSeconds, r.Boot.UpSeconds = 5.7, 5.1
		switch only {
		case OnlyBoot:
			r.Reprovision = Dist{N: 5, P50: 230, P99: 250}
		case OnlyVsock:
			r.Throughput.VsockHostGst = Rate{Bytes: 64 << 20, MiBps: 65.8}
			r.Throughput.VsockGstHost = Rate{Bytes: 64 << 20, MiBps: 38.9}
		case OnlyConcurrent:
			r.Concurrent.N, r.Concurrent.OK, r.Concurrent.RelayRSSMiB = 1000, 1000, 40
		}
		r.Aims = r.aims()
		return r
	}
	for _, tc := range []struct {
		only      string
		want, not []string
	}{
		{OnlyBoot,
			[]string{"boot to first interop exec", "re-provision when nothing changed", "boot to first interop exec: 5.7 s"},
			[]string{"NO FIG", "interop launch", "PE launch", "raw vsock", "concurrent", "throughput", "launch latency"}},
		{OnlyVsock,
			[]string{"boot to first interop exec", "raw vsock guest -> host", "raw vsock host -> guest", "throughput"},
			[]string{"NO FIG", "re-provision", "interop launch", "concurrent", "SSH pipe", "interop stdout", "launch latency"}},
		{OnlyConcurrent,
			[]string{"boot to first interop exec", "1000 concurrent launches: correct", "hostagent peak RSS"},
			[]string{"NO FIG", "re-provision", "interop launch", "raw vsock", "throughput", "launch latency"}},
		{"",
			[]string{"NO FIG", "interop launch", "raw vsock", "concurrent launches", "throughput", "launch latency", "re-provision"},
			nil},
	} {
		var txt bytes.Buffer
		if err := measured(tc.only).WriteText(&txt); err != nil {
			t.Fatal(err)
		}
		for _, s := range tc.want {
			if !strings.Contains(txt.String(), s) {
				t.Errorf("--only %q: no %q in\n%s", tc.only, s, txt.String())
			}
		}
		for _, s := range tc.not {
			if strings.Contains(txt.String(), s) {
				t.Errorf("--only %q: %q in\n%s", tc.only, s, txt.String())
			}
		}
	}
}

// aimOf is r's aim for figure, or nil.
func aimOf(r Result, figure string) *Aim {
	for _, a := range r.aims() {
		if a.Figure == figure {
			return &a
		}
	}
	return nil
}
