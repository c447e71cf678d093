package machine

import (
	"context"

	"lab/formats"
	"lab/vm"
	"lab/wineprefix"
)

// Status is a machine's one computed status (lab status): the VM's (package vm: state,
// accelerator, vsock, QEMU, hostagent and its tasks, shares), the relay's health and
// counters, the Windows side and the configured formats.
type Status struct {
	*vm.Status
	// Relay is the relay's state and counters, while the hostagent runs.
	Relay *RelayState `json:"relay,omitempty"`
	// PE is the Windows personality: the machine's Wine prefix and whether it is warm.
	PE *WindowsStatus `json:"pe,omitempty"`
	// Formats are the machine's configured formats (a lab file's), beyond pe and host.
	Formats []formats.Format `json:"formats,omitempty"`
}

// WindowsStatus is the Windows side of a machine.
type WindowsStatus struct {
	State       string `json:"state"` // "warm", "warming", "stopped", "failed", "off", "wine not installed"
	Prefix      string `json:"prefix,omitempty"`
	WineVersion string `json:"wine_version,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Inspect computes the status of the machine with this name (or state directory).
func Inspect(ctx context.Context, nameOrDir string) (*Status, error) {
	st, err := vm.Inspect(ctx, nameOrDir)
	if err != nil {
		return nil, err
	}
	return statusOf(st), nil
}

// Inspect computes the machine's status.
func (m *Machine) Inspect(ctx context.Context) (*Status, error) { return Inspect(ctx, m.ref) }

// List computes the status of every machine, by name.
func List(ctx context.Context) ([]*Status, error) {
	sts, err := vm.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Status, len(sts))
	for i, st := range sts {
		out[i] = statusOf(st)
	}
	return out, nil
}

func statusOf(st *vm.Status) *Status {
	v := &Status{Status: st, PE: windowsOf(st)}
	v.Formats, _ = LoadFormats(st.StateDir)
	v.Relay = RelayStateOf(st)
	return v
}

func windowsOf(st *vm.Status) *WindowsStatus {
	in, err := Instance(st.StateDir)
	if err != nil {
		return nil
	}
	dir := PrefixOf(in)
	if dir == "" {
		if _, _, err := wineprefix.Find(wineprefix.Options{}); err != nil {
			return &WindowsStatus{State: "wine not installed"}
		}
		return &WindowsStatus{State: "off (started with --no-windows)"}
	}
	v := &WindowsStatus{State: "stopped", Prefix: dir}
	if !st.AgentAlive {
		v.State = "not kept warm (the hostagent is not running; lab down stops its wineserver)"
	} else if ws := WineStateOf(st); ws != nil {
		v.State, v.WineVersion, v.Error = string(ws.State), ws.WineVersion, ws.Error
	}
	return v
}
