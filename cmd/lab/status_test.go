package main

import (
	"bytes"
	"strings"
	"testing"

	"lab/machine"
	"lab/vm"
)

// TestPrintStatusVsock: the vsock line carries the userspace device's figures, the
// connections it refused at its limit among them; kernel vsock has no such device.
func TestPrintStatusVsock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vsock  string
		health *vm.Health
		want   string
	}{
		{"user", "user", &vm.Health{VsockOK: true, VsockDevice: &vm.VsockDevice{Conns: 2, Refused: 5, TxBytes: 300, RxBytes: 4000}},
			"vsock:     user, guest CID 3, backend ok; device: 2 connections, 5 refused at its connection limit, 300 B from the guest, 4000 B to it"},
		{"user dead", "user", &vm.Health{VsockError: "vhost-user: front-end gone", VsockDevice: &vm.VsockDevice{Refused: 1}},
			"vsock:     user, guest CID 3, DEAD: vhost-user: front-end gone; device: 0 connections, 1 refused at its connection limit, 0 B from the guest, 0 B to it"},
		{"kernel", "kernel", &vm.Health{VsockOK: true}, "vsock:     kernel, guest CID 3, backend ok"},
		{"no hostagent", "user", nil, "vsock:     user, guest CID 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printStatus(&b, &machine.Status{Status: &vm.Status{Name: "t", Vsock: tc.vsock, CID: 3, Health: tc.health}})
			var got string
			for _, l := range strings.Split(b.String(), "\n") {
				if strings.HasPrefix(l, "vsock:") {
					got = l
				}
			}
			if got != tc.want {
				t.Errorf("vsock line\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
