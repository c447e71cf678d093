package bench

import (
	"bytes"
	"fmt"
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
	for _, tc := range []struct {
		distro string
		total  float64
		limit  float64
		met    bool
	}{
		{"", 12, 4.5, false},
		{"", 4, 4.5, true},
		{images.DistroDebian, 12, 15, true},
		{images.DistroDebian, 16, 15, false},
	} {
		var r Result
		r.Image.Distro = tc.distro
		r.Image.BuildSeconds, r.Image.FreshDiskMB = 130, 42
		r.Boot.TotalSeconds = tc.total
		var boot *Aim
		for _, a := range r.aims() {
			if a.Figure == "boot to first interop exec" {
				boot = &a
			}
		}
		if boot == nil {
			t.Fatal("no boot aim")
		}
		if boot.Limit != tc.limit || boot.Met != tc.met {
			t.Errorf("%q boot %.0f s: limit %.1f met %v, want %.1f %v", tc.distro, tc.total, boot.Limit, boot.Met, tc.limit, tc.met)
		}
		if hasImage := strings.Contains(boot.Baselines, "clean build 130 s") && strings.Contains(boot.Baselines, "disk 42 MB"); hasImage != (tc.distro != "") {
			t.Errorf("%q: baselines %q", tc.distro, boot.Baselines)
		}
	}
}
