package suite

import (
	"testing"

	"lab/vm"
)

// lab run's report says which image it ran on: distro, architecture and key.
func TestMachineOf(t *testing.T) {
	tests := []struct {
		name string
		in   vm.Instance
		want string
	}{
		{"debian", vm.Instance{Name: "dbg", Arch: "amd64", Distro: "debian", Image: "/c/images/debian-1d0afe947ea05a5f65e1", KernelVer: "6.1.0-57-amd64", Accel: "tcg"},
			"dbg: amd64, debian image debian-1d0afe947ea05a5f65e1, kernel 6.1.0-57-amd64, tcg"},
		{"initramfs (instance.json without distro)", vm.Instance{Name: "default", Arch: "arm64", Image: "/c/images/10c3293957377f1d42db", Accel: "tcg"},
			"default: arm64, initramfs image 10c3293957377f1d42db, tcg"},
		{"started before arm64 guests", vm.Instance{Name: "old", Image: "/c/images/k"}, "old: amd64, initramfs image k"},
	}
	for _, tt := range tests {
		if got := machineOf(&tt.in).String(); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
