package vm

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestHealthVsockDevice: with the userspace vsock backend the hostagent's health carries
// the device's figures (lab status prints them, the refused connections among them); with
// kernel vsock there is no device and no figures.
func TestHealthVsockDevice(t *testing.T) {
	for _, mode := range []string{"user", "kernel"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			a := &agent{in: &Instance{Name: "t", StateDir: dir, CID: 3, Vsock: mode}, log: slog.New(slog.DiscardHandler),
				ready: make(chan struct{}), reg: newRegistry(), vsockDone: make(chan error, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, stop, err := a.vsockEnv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			h := a.healthNow(ctx)
			b, err := json.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			const want = `"vsock_device":{"conns":0,"refused":0,"tx_bytes":0,"rx_bytes":0,"tx_packets":0,"rx_packets":0,"kicks":0,"interrupts":0,"passes":0}`
			if got := strings.Contains(string(b), want); got != (mode == "user") || !h.VsockOK {
				t.Errorf("health %s; want vsock ok and %s: %v", b, want, mode == "user")
			}
		})
	}
}
