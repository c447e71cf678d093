package machine

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"lab/provision"
	"lab/vm"
	"lab/wineprefix"
)

// Machine is one lab machine, running (Up) or opened by name (Open). Its methods that
// talk to the guest share one connection (the hostagent's kept SSH connection), made on
// first use; Close drops it and leaves the machine running, Down stops the machine.
type Machine struct {
	// Name is the VM's name; StateDir its state directory (package vm).
	Name, StateDir string
	// Instance is the VM's instance record: set by Up, and by Open when the VM has one.
	Instance *vm.Instance
	// Windows is the machine's Wine prefix (its C:, shared at /mnt/c) when Up gave it the
	// Windows personality; nil otherwise. WindowsOff then says why when Wine is missing
	// (it wraps wineprefix.ErrNoWine); it is nil when it was not asked for.
	Windows    *wineprefix.Prefix
	WindowsOff error
	// Took is how long Up's steps took (lab bench reports the boot).
	Took struct{ Windows, Boot, Provision time.Duration }
	// Progress gets the progress lines of Up and Provision and the warnings of Down; nil:
	// silent.
	Progress io.Writer

	ref string // what the machine was opened by (a name or a state dir), for vm's messages

	mu    sync.Mutex
	guest *vm.Client
}

// Open returns the machine with this name (or state directory) without touching it:
// whether it runs shows when a method needs the guest (or from Inspect).
func Open(nameOrDir string) (*Machine, error) {
	dir, err := vm.StateDirOf(nameOrDir)
	if err != nil {
		return nil, err
	}
	m := &Machine{Name: filepath.Base(dir), StateDir: dir, ref: nameOrDir}
	if in, err := Instance(dir); err == nil {
		m.Instance, m.Name = in, in.Name
	}
	return m, nil
}

// Guest returns the connection to the guest (kept by the hostagent), connecting on first
// use. The machine owns it: Close or Down closes it.
func (m *Machine) Guest(ctx context.Context) (*vm.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.guest != nil {
		return m.guest, nil
	}
	c, err := vm.Connect(ctx, m.ref)
	if err != nil {
		return nil, err
	}
	m.guest = c
	return c, nil
}

// Close drops the connection to the guest; the machine keeps running.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.guest == nil {
		return nil
	}
	err := m.guest.Close()
	m.guest = nil
	return err
}

// Provision (re)installs interop in the guest: the interpreter, its configuration and
// token, the binfmt rules, the shares' mounts and the exposed commands' stubs; it
// changes only what differs; opts.Progress gets a line per step.
func (m *Machine) Provision(ctx context.Context, opts ProvisionOptions) (*provision.Result, error) {
	g, err := m.Guest(ctx)
	if err != nil {
		return nil, err
	}
	return Provision(ctx, g, m.StateDir, opts)
}

// Expose puts host programs (paths, or names looked up in PATH) on the relay's allow
// list, as NAME (as) when there is one program, and their stubs on the guest's PATH.
func (m *Machine) Expose(ctx context.Context, programs []string, as string, opts ProvisionOptions) ([]provision.Exposed, error) {
	g, err := m.Guest(ctx)
	if err != nil {
		return nil, err
	}
	return Expose(ctx, g, m.ref, programs, as, opts)
}

// Unexpose removes exposed commands by name from the allow list and their stubs from
// the guest.
func (m *Machine) Unexpose(ctx context.Context, names []string, opts ProvisionOptions) ([]provision.Exposed, error) {
	g, err := m.Guest(ctx)
	if err != nil {
		return nil, err
	}
	return Unexpose(ctx, g, m.ref, names, opts)
}

// Interop turns the machine's binfmt rules on or off (foreign files then fail in the
// guest with "Exec format error", as under WSL with interop disabled).
func (m *Machine) Interop(ctx context.Context, on bool) error {
	g, err := m.Guest(ctx)
	if err != nil {
		return err
	}
	return Interop(ctx, g, m.ref, on)
}

// Control is the machine's control for the scenario suite (scenarios.Control), with
// opts for its provisioning.
func (m *Machine) Control(ctx context.Context, opts ProvisionOptions) (*Control, error) {
	g, err := m.Guest(ctx)
	if err != nil {
		return nil, err
	}
	return &Control{Guest: g, StateDir: m.StateDir, Opts: opts}, nil
}

// Tasks are what the hostagent serves for as long as a machine's VM runs (lab
// hostagent): the interop relay on the VM's vsock, and the machine's Wine prefix kept
// warm (and shut down with the VM).
func Tasks() []vm.Task {
	return []vm.Task{RelayTask(), WineTask()}
}

func (m *Machine) say(format string, a ...any) {
	if m.Progress != nil {
		fmt.Fprintf(m.Progress, format+"\n", a...)
	}
}
