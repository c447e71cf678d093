package suite

import (
	"testing"

	"lab/machine"
	"lab/vm"
)

func TestFixtureShare(t *testing.T) {
	driveC := vm.Share{HostPath: "/p/drive_c", GuestPath: machine.DriveCGuest, Tag: machine.DriveCTag}
	scratch := vm.Share{HostPath: "/s/scratch", GuestPath: "/mnt/lab", Tag: vm.ScratchTag}
	work := vm.Share{HostPath: "/w", GuestPath: "/mnt/work", Tag: "share0"}
	ro := vm.Share{HostPath: "/r", GuestPath: "/mnt/ro", Tag: "share1", ReadOnly: true}
	tests := []struct {
		name   string
		shares []vm.Share
		want   string
	}{
		{"scratch first", []vm.Share{work, driveC, scratch}, "/s/scratch"},
		{"a user share without scratch", []vm.Share{ro, driveC, work}, "/w"},
		// A plain lab up of an older lab with Wine: drive_c is the only writable share,
		// and labpath there says C:\..., not the host path the scenarios expect.
		{"only drive_c", []vm.Share{driveC}, ""},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh, err := fixtureShare(&vm.Instance{Name: "x", Shares: tt.shares})
			if tt.want == "" {
				const msg = `suite: VM "x" has no writable share for the scenarios' fixtures (it was started with lab up --no-scratch, or by an older lab): lab down --name x, then lab up --name x`
				if err == nil || err.Error() != msg {
					t.Fatalf("got %v, %v; want %q", sh, err, msg)
				}
				return
			}
			if err != nil || sh.HostPath != tt.want {
				t.Fatalf("got %v, %v; want %s", sh, err, tt.want)
			}
		})
	}
}
