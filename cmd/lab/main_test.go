package main

import (
	"errors"
	"fmt"
	"testing"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"error", errors.New("vm: something failed"), 1},
		{"usage", &usageError{errors.New("--accel: bad")}, 2},
		{"wrapped usage", fmt.Errorf("up: %w", &usageError{errors.New("bad share")}), 2},
		{"unknown command", errors.New(`unknown command "bogus" for "lab"`), 2},
		{"argument count", errors.New(`accepts 0 arg(s), received 1`), 2},
		{"passed-through status", &exitError{code: 7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d; want %d", tt.err, got, tt.want)
			}
		})
	}
}

// The real command tree reports its own usage errors as such.
func TestUsageErrorsOfTheCommandTree(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"version", "extra"}, {"up", "--accel"}} {
		app := newApp()
		app.SetArgs(args)
		app.SetOut(new(discard))
		app.SetErr(new(discard))
		if got := exitCode(app.Execute()); got != 2 {
			t.Errorf("lab %v: exit %d; want 2", args, got)
		}
	}
}

type discard struct{}

func (*discard) Write(p []byte) (int, error) { return len(p), nil }

// lab bench refuses a bad --arch before building or booting anything.
func TestBenchBadArch(t *testing.T) {
	app := newApp()
	app.SetArgs([]string{"bench", "--arch", "mips"})
	app.SetOut(new(discard))
	app.SetErr(new(discard))
	err := app.Execute()
	if got := exitCode(err); got != 2 {
		t.Errorf("exit %d; want 2", got)
	}
	want := `--arch: guest architecture "mips": want amd64 or arm64`
	if err == nil || err.Error() != want {
		t.Errorf("error %v; want %s", err, want)
	}
}
