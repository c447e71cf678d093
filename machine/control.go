package machine

import (
	"context"
	"fmt"
	"path/filepath"
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

// Agent is the VM's hostagent as package machine asks it for the relay (vm.Client.Call). The
// Guest a Control or Expose is given is one (a *vm.Client).
type Agent interface {
	Call(ctx context.Context, name string, args, reply any) error
}

// agentOf returns g's hostagent.
func agentOf(g provision.Guest) (Agent, error) {
	a, ok := g.(Agent)
	if !ok {
		return nil, fmt.Errorf("machine: %T cannot reach the VM's hostagent (it needs a vm.Client)", g)
	}
	return a, nil
}

// RelayStop makes the relay stop listening; it returns once it has.
func (c *Control) RelayStop(ctx context.Context) error {
	return c.relay(ctx, RequestRelayStop, RelayStopped)
}

// RelayStart lets the relay listen again; it returns once it serves.
func (c *Control) RelayStart(ctx context.Context) error {
	return c.relay(ctx, RequestRelayStart, RelayServing)
}

func (c *Control) relay(ctx context.Context, req string, want RelayPhase) error {
	a, err := agentOf(c.Guest)
	if err != nil {
		return err
	}
	var st RelayState
	if err := a.Call(ctx, req, nil, &st); err != nil {
		return fmt.Errorf("machine: %w (see %s)", err, filepath.Join(c.StateDir, FileRelayLog))
	}
	if st.State != want {
		return fmt.Errorf("machine: %s: the relay is %s, not %s (see %s)", req, st.State, want, filepath.Join(c.StateDir, FileRelayLog))
	}
	return nil
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
	if err := c.RelayStart(ctx); err != nil { // serving already: a no-op
		return err
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

// RelayLogSince returns the relay's log records stamped at or after t, as text lines
// (at most the last 40; relay.log has them all). It asks the hostagent, which keeps the
// latest records: nothing is parsed back from the file.
func (c *Control) RelayLogSince(t time.Time) []string {
	a, err := agentOf(c.Guest)
	if err != nil {
		return []string{err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []LogRecord
	if err := a.Call(ctx, RequestRelayLog, RelayLogArgs{Since: t}, &recs); err != nil {
		return []string{"(no relay log: " + err.Error() + ")"}
	}
	var out []string
	if len(recs) > 40 {
		out = append(out, fmt.Sprintf("(%d earlier lines in %s)", len(recs)-40, filepath.Join(c.StateDir, FileRelayLog)))
		recs = recs[len(recs)-40:]
	}
	for _, r := range recs {
		out = append(out, r.String())
	}
	return out
}
