package scenarios

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestReportNamesMachine(t *testing.T) {
	m := &Machine{Name: "arm", Arch: "arm64", Distro: "initramfs", Image: "10c3293957377f1d42db", Kernel: "6.1.0-57-arm64", Accel: "tcg"}
	rep := &Report{Machine: m, Duration: time.Second, Results: []Result{{Name: "hello", Status: Pass}}}
	const line = "arm: arm64, initramfs image 10c3293957377f1d42db, kernel 6.1.0-57-arm64, tcg"
	for name, write := range map[string]func(*bytes.Buffer) error{
		"table": func(b *bytes.Buffer) error { return rep.WriteTable(b) },
		"tap":   func(b *bytes.Buffer) error { return rep.WriteTAP(b) },
		"junit": func(b *bytes.Buffer) error { return rep.WriteJUnit(b) },
		"json":  func(b *bytes.Buffer) error { return rep.WriteJSON(b) },
	} {
		var b bytes.Buffer
		if err := write(&b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := line
		if name == "json" {
			want = `"arch": "arm64",
    "distro": "initramfs",
    "image": "10c3293957377f1d42db"`
		}
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s report does not name the machine (%q):\n%s", name, want, b.String())
		}
	}
}

func TestMergeMachines(t *testing.T) {
	a := &Machine{Name: "m1", Arch: "arm64", Image: "k", Accel: "tcg"}
	b := &Machine{Name: "m2", Arch: "arm64", Image: "k", Accel: "tcg"}
	x86 := &Machine{Name: "m3", Arch: "amd64", Image: "j", Accel: "tcg"}
	tests := []struct {
		name string
		ms   []*Machine
		want string // String() of the merged machine; "" for none
	}{
		{"one", []*Machine{a}, "m1: arm64, image k, tcg"},
		{"same image, two VMs", []*Machine{a, b}, "arm64, image k, tcg"},
		{"two architectures", []*Machine{a, x86}, ""},
		{"two distros", []*Machine{{Arch: "amd64", Distro: "initramfs", Image: "k"}, {Arch: "amd64", Distro: "debian", Image: "k"}}, ""},
		{"a report before distros", []*Machine{{Arch: "amd64", Image: "j"}}, "amd64, image j"},
		{"one without", []*Machine{a, nil}, ""},
	}
	for _, tt := range tests {
		var reps []*Report
		for _, m := range tt.ms {
			reps = append(reps, &Report{Machine: m})
		}
		got := ""
		if m := mergeMachines(reps); m != nil {
			got = m.String()
		}
		if got != tt.want {
			t.Errorf("%s: merged %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestFailureLogs: a failing scenario's log, then the relay's and the guest's log lines
// under their headings, in the live report and in TAP; a log that is empty has no heading.
func TestFailureLogs(t *testing.T) {
	r := Result{Name: "x", Status: Fail, Duration: 1500 * time.Millisecond, Log: "> exec lab\nFAIL: got 1\n",
		RelayLog: []string{"level=INFO msg=launch"}, GuestLog: []string{"[ 1.0] binfmt", "[ 1.1] vsock"}}
	var live bytes.Buffer
	writeFailure(&live, r)
	if want := "     | > exec lab\n     | FAIL: got 1\n     relay log:\n     | level=INFO msg=launch\n" +
		"     guest log (dmesg):\n     | [ 1.0] binfmt\n     | [ 1.1] vsock\n"; live.String() != want {
		t.Errorf("live report:\n%q\nwant\n%q", live.String(), want)
	}
	r.RelayLog = nil
	var tap bytes.Buffer
	(&Report{Results: []Result{r}}).WriteTAP(&tap)
	if want := "TAP version 13\n1..1\nnot ok 1 - x\n  ---\n  duration_ms: 1500\n  log: |\n    > exec lab\n    FAIL: got 1\n" +
		"  guest_log: |\n    [ 1.0] binfmt\n    [ 1.1] vsock\n  ...\n"; tap.String() != want {
		t.Errorf("TAP:\n%q\nwant\n%q", tap.String(), want)
	}
}
