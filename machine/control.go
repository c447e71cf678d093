package machine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"lab/provision"
)

// Control changes a running VM on behalf of the scenario suite (it implements
// scenarios.Control).
type Control struct {
	Guest    provision.Guest
	StateDir string
	Opts     ProvisionOptions
}

func (c *Control) Interop(ctx context.Context, on bool) error {
	return Interop(ctx, c.Guest, c.StateDir, on)
}

func (c *Control) Expose(ctx context.Context, hostPath, name string) error {
	_, err := Expose(ctx, c.Guest, c.StateDir, []string{hostPath}, name, c.quiet())
	return err
}

func (c *Control) Unexpose(ctx context.Context, name string) error {
	_, err := Unexpose(ctx, c.Guest, c.StateDir, []string{name}, c.quiet())
	return err
}

// RelayStop makes the relay stop listening and waits until it says so.
func (c *Control) RelayStop(ctx context.Context) error {
	if err := os.WriteFile(filepath.Join(c.StateDir, FileRelayStop), []byte("stopped by lab\n"), 0o644); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	return c.waitRelay(ctx, "stopped")
}

// RelayStart lets the relay listen again and waits until it serves.
func (c *Control) RelayStart(ctx context.Context) error {
	if err := os.Remove(filepath.Join(c.StateDir, FileRelayStop)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("machine: %w", err)
	}
	return c.waitRelay(ctx, "serving")
}

func (c *Control) waitRelay(ctx context.Context, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	for {
		st, err := ReadRelayState(c.StateDir)
		if err == nil && st.State == want && st.Updated.After(start) {
			return nil
		}
		select {
		case <-ctx.Done():
			got := "no relay state"
			if st != nil {
				got = st.State
			}
			return fmt.Errorf("machine: relay did not become %s (it is %s; see %s)", want, got, filepath.Join(c.StateDir, FileRelayLog))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Provision provisions the guest again with the control's options, WSL's names or not.
func (c *Control) Provision(ctx context.Context, wslNames bool) error {
	o := c.quiet()
	o.NoWSLNames, o.WSLNames = !wslNames, wslNames
	_, err := Provision(ctx, c.Guest, c.StateDir, o)
	return err
}

// Restore undoes whatever a scenario changed: relay serving, rules on, token and stubs
// as provisioned, the names the control's options choose.
func (c *Control) Restore(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.StateDir, FileRelayStop)); err == nil {
		if err := c.RelayStart(ctx); err != nil {
			return err
		}
	}
	o := c.quiet()
	if !o.NoWSLNames {
		o.WSLNames = true // undo a scenario's provision --no-wsl-names
	}
	_, err := Provision(ctx, c.Guest, c.StateDir, o)
	return err
}

func (c *Control) quiet() ProvisionOptions {
	o := c.Opts
	o.Progress = nil
	return o
}

// RelayLogSince returns the relay log lines stamped at or after t (slog text lines
// start with time=RFC3339).
func RelayLogSince(stateDir string, t time.Time) []string {
	f, err := os.Open(filepath.Join(stateDir, FileRelayLog))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		when, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !when.Before(t.Add(-time.Millisecond)) {
			out = append(out, line)
		}
	}
	if len(out) > 40 {
		out = append([]string{fmt.Sprintf("(%d earlier lines in %s)", len(out)-40, filepath.Join(stateDir, FileRelayLog))}, out[len(out)-40:]...)
	}
	return out
}
