package qemu

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lab/internal/shell"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestCommandGolden checks the argv of each option set against testdata/NAME.golden
// (one argument per line). Run with -update after an intended change.
func TestCommandGolden(t *testing.T) {
	lab := All(
		WithAccel("tcg"), WithSMP(2), WithMemory(1024),
		WithBIOS(QbootROM), WithKernel("/cache/vmlinux"), WithInitrd("/state/initrd"),
		WithAppend("console=ttyS0", "quiet"),
		WithSerialFile("/state/console.log"), WithQMP("/state/qmp.sock"),
	)
	tests := []struct {
		name string
		fns  []Fn
	}{
		{"empty", nil},
		{"tcg-minimal", []Fn{WithAccel("tcg"), WithMemory(256)}},
		{"kvm", []Fn{WithAccel("kvm"), WithSMP(4), WithMemory(2048)}},
		{"kvm-cpu-override", []Fn{WithAccel("kvm"), WithCPU("qemu64")}},
		{"binary", []Fn{WithBinary("/opt/qemu/bin/qemu-system-x86_64")}},
		{"lab-user-vsock", []Fn{lab, WithUserNet(Forward{HostPort: 40022, GuestPort: 22}), WithUserVsock("/state/vhost-vsock.sock"), WithRNG()}},
		{"lab-kernel-vsock", []Fn{lab, WithUserNet(Forward{HostPort: 40022, GuestPort: 22}), WithKernelVsock(7)}},
		{"shares", []Fn{lab, WithShare("/home/me/src", "share0", false), WithShare("/data,with,commas", "share1", true)}},
		{"two-qmp", []Fn{WithQMP("/s/qmp.sock"), WithQMP("/s/agent-qmp.sock")}},
		{"qmp-listener", []Fn{WithQMPListener(3)}},
		{"shared-memory-explicit", []Fn{WithMemory(512), WithSharedMemory()}},
		{"net-multi-forward", []Fn{WithUserNet(Forward{HostPort: 2222, GuestPort: 22}, Forward{HostPort: 8080, GuestPort: 80})}},
		{"raw-args", []Fn{WithArgs("-S", "-d", "guest_errors")}},
		{"arm64-lab-user-vsock", []Fn{WithArch("arm64"), WithAccel("tcg"), WithSMP(2), WithMemory(1024),
			WithKernel("/cache/Image"), WithInitrd("/state/initrd"), WithAppend("console=ttyAMA0", "quiet"),
			WithSerialFile("/state/console.log"), WithQMPListener(3),
			WithUserNet(Forward{HostPort: 40022, GuestPort: 22}), WithRNG(), WithUserVsock("/state/vhost-vsock.sock"),
			WithShare("/home/me/src", "share0", false)}},
		{"arm64-kvm", []Fn{WithArch("arm64"), WithAccel("kvm"), WithMemory(64)}},
		{"arm64-cpu-override", []Fn{WithArch("arm64"), WithCPU("cortex-a57"), WithBinary("/opt/qemu/bin/qemu-system-aarch64")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, err := Command(tt.fns...)
			if err != nil {
				t.Fatalf("Command: %v", err)
			}
			checkGolden(t, tt.name, argv)
		})
	}
}

// checkGolden compares argv, one word a line, with testdata/NAME.golden (-update writes it).
func checkGolden(t *testing.T, name string, argv []string) {
	t.Helper()
	got := strings.Join(argv, "\n") + "\n"
	golden := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./vm/qemu -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("argv mismatch for %s\n got: %s\nwant: %s", name, shell.Join(argv), strings.ReplaceAll(string(want), "\n", " "))
	}
}

func TestCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		fns  []Fn
	}{
		{"bad accel", []Fn{WithAccel("hvf")}},
		{"zero cpus", []Fn{WithSMP(0)}},
		{"tiny memory", []Fn{WithMemory(16)}},
		{"shared without size", []Fn{WithSharedMemory()}},
		{"user vsock without size", []Fn{WithUserVsock("/s")}},
		{"initrd without kernel", []Fn{WithInitrd("/i")}},
		{"append without kernel", []Fn{WithAppend("quiet")}},
		{"append with space", []Fn{WithKernel("/k"), WithAppend("a b")}},
		{"bad tag", []Fn{WithShare("/x", "has space", false)}},
		{"long tag", []Fn{WithShare("/x", strings.Repeat("t", 32), false)}},
		{"empty share", []Fn{WithShare("", "t", false)}},
		{"low cid", []Fn{WithKernelVsock(2)}},
		{"bad port", []Fn{WithUserNet(Forward{HostPort: 0, GuestPort: 22})}},
		{"empty qmp", []Fn{WithQMP("")}},
		{"qmp listener on stdin", []Fn{WithQMPListener(0)}},
		{"empty serial", []Fn{WithSerialFile("")}},
		{"empty binary", []Fn{WithBinary("")}},
		{"unknown arch", []Fn{WithArch("riscv64")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Command(tt.fns...)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Command error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestIDAllocator(t *testing.T) {
	var a IDAllocator
	got := []string{a.ID("fs"), a.ID("net"), a.ID("fs"), a.ID("fs")}
	want := []string{"fs0", "net0", "fs1", "fs2"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ID #%d = %q, want %q", i, got[i], want[i])
		}
	}
}
