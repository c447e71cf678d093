// Provisioning of lab's VMs: package provision's steps, fed from the VM's state
// directory (instance record, token, allow list, formats), with the interpreter's
// configuration and the stubs rendered in the formats of packages guest and wire.

package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"lab/provision"
	"lab/share"
	"lab/vm"
	"lab/wire"
)

// RelayAddr is where the guest's interpreter finds the relay: the host's vsock CID (2)
// on the default port.
var RelayAddr = "vsock:2:" + strconv.Itoa(wire.DefaultPort)

// Instance reads the VM's instance record (written by vm.Up before the hostagent starts).
func Instance(stateDir string) (*vm.Instance, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, vm.FileInstance))
	if err != nil {
		return nil, fmt.Errorf("machine: %w (is the VM up? lab up)", err)
	}
	var in vm.Instance
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("machine: %s: %w", vm.FileInstance, err)
	}
	return &in, nil
}

// Shares returns the VM's shares with their 9p tags.
func Shares(in *vm.Instance) []provision.Share { return share.Tagged(in.Shares) }

// InteropConf renders /etc/lab/interop.conf in the format package guest reads
// (`key = value` lines; paths with spaces or quotes Go-quoted).
func InteropConf(s provision.Settings) ([]byte, error) {
	var b strings.Builder
	b.WriteString("# lab interop configuration, written by lab provision; changes are overwritten.\n")
	fmt.Fprintf(&b, "relay = %s\n", s.RelayAddr)
	fmt.Fprintf(&b, "token_file = %s\n", share.QuoteField(s.TokenPath))
	for _, sh := range s.Shares {
		fmt.Fprintf(&b, "share = %s\n", sh.ConfValue())
	}
	for _, d := range s.Drives {
		fmt.Fprintf(&b, "drive = %s %s\n", d.Letter, share.QuoteField(d.GuestPath))
	}
	if s.CwdWarning {
		b.WriteString("cwd_warning = true\n") // from /etc/wsl.conf [lab] cwdWarning
	}
	for _, f := range s.Formats {
		b.WriteString(formatLine(f))
	}
	return []byte(b.String()), nil
}

// Stub renders an exposed command's stub (wire's format).
func Stub(e provision.Exposed) []byte {
	b, err := wire.FormatStub(e.Name)
	if err != nil {
		// Names are checked when they are exposed; a bad one here is a corrupt allow list.
		return []byte(wire.StubMagic + "# invalid name: " + err.Error() + "\n")
	}
	return b
}

// ProvisionOptions tune Provision (and Expose, Unexpose, Control).
type ProvisionOptions struct {
	Interpreter string    // host path of lab-interop for the guest; zero: provision.FindInterpreter
	Progress    io.Writer // one line per step; nil: silent
	// NoWindowsPath leaves the guest's PATH alone: by default a VM with the Windows
	// personality gets WindowsPath appended to login shells' PATH (WSL's appendWindowsPath).
	NoWindowsPath bool
	// NoWSLNames installs only lab's names: the pe rule is lab-pe instead of WSL's
	// WSLInterop, no /usr/bin/wslpath, no WSL_DISTRO_NAME or WSL_INTEROP (and removes what an
	// earlier run installed under WSL's names). The choice is kept in the state directory
	// (FileNoWSLNames), so later provisioning (lab expose, lab provision) keeps it until
	// WSLNames is given.
	NoWSLNames bool
	// WSLNames undoes an earlier NoWSLNames.
	WSLNames bool
}

// FileNoWSLNames in a VM's state directory records NoWSLNames.
const FileNoWSLNames = "no-wsl-names"

// wslNames applies opts to the VM's recorded choice and returns it.
func wslNames(stateDir string, opts ProvisionOptions) (bool, error) {
	marker := filepath.Join(stateDir, FileNoWSLNames)
	switch {
	case opts.NoWSLNames && opts.WSLNames:
		return false, fmt.Errorf("machine: --wsl-names and --no-wsl-names contradict each other")
	case opts.NoWSLNames:
		if err := os.WriteFile(marker, []byte("lab's names only (lab provision --wsl-names undoes it)\n"), 0o644); err != nil {
			return false, fmt.Errorf("machine: %w", err)
		}
		return false, nil
	case opts.WSLNames:
		if err := os.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("machine: %w", err)
		}
		return true, nil
	}
	_, err := os.Stat(marker)
	return err != nil, nil
}

// WindowsPath is what the guest's PATH gains under the Windows personality, as WSL
// appends the Windows PATH: cmd.exe and friends by name.
var WindowsPath = []string{DriveCGuest + "/Windows/System32", DriveCGuest + "/Windows"}

// Rules are the binfmt rules lab registers, with WSL's names or lab's.
func Rules(wslNames bool) []provision.Rule {
	return provision.DefaultRules([]byte(wire.StubMagic), wslNames)
}

// Config assembles the provisioning of the VM whose state is in stateDir.
func Config(stateDir string, opts ProvisionOptions) (provision.Config, error) {
	in, err := Instance(stateDir)
	if err != nil {
		return provision.Config{}, err
	}
	token, err := provision.EnsureToken(stateDir)
	if err != nil {
		return provision.Config{}, err
	}
	exposed, err := provision.LoadExposed(stateDir)
	if err != nil {
		return provision.Config{}, err
	}
	names, err := wslNames(stateDir, opts)
	if err != nil {
		return provision.Config{}, err
	}
	table, err := LoadFormats(stateDir)
	if err != nil {
		return provision.Config{}, err
	}
	settings := provision.Settings{RelayAddr: RelayAddr, Formats: table}
	var winPath []string
	if PrefixOf(in) != "" {
		settings.Drives = []provision.Drive{{Letter: DriveLetter, GuestPath: DriveCGuest}}
		if !opts.NoWindowsPath {
			winPath = WindowsPath
		}
	}
	return provision.Config{
		Interpreter: opts.Interpreter,
		Token:       token,
		InteropConf: InteropConf,
		Settings:    settings,
		WindowsPath: winPath,
		Shares:      Shares(in),
		Exposed:     exposed,
		Stub:        Stub,
		StubMagic:   []byte(wire.StubMagic),
		WSLNames:    names,
		DistroName:  in.Name,
		Rules:       append(Rules(names), provision.FormatRules(table)...),
		Progress:    opts.Progress,
	}, nil
}

// Provision provisions the named VM (or state dir) over g, a connection to it.
func Provision(ctx context.Context, g provision.Guest, nameOrDir string, opts ProvisionOptions) (*provision.Result, error) {
	dir, err := vm.StateDirOf(nameOrDir)
	if err != nil {
		return nil, err
	}
	cfg, err := Config(dir, opts)
	if err != nil {
		return nil, err
	}
	return provision.Provision(ctx, g, cfg)
}

// Expose adds host programs to the VM's allow list, has the relay reload it (through
// g's hostagent: g is a vm.Client) and provisions their stubs.
func Expose(ctx context.Context, g provision.Guest, nameOrDir string, programs []string, as string, opts ProvisionOptions) ([]provision.Exposed, error) {
	return editExposed(ctx, g, nameOrDir, opts, func(list []provision.Exposed) ([]provision.Exposed, []provision.Exposed, error) {
		list, added, err := provision.AddExposed(list, programs, as)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range added {
			if err := wire.CheckStubName(e.Name); err != nil {
				return nil, nil, fmt.Errorf("machine: expose %s: %w (use --as NAME)", e.HostPath, err)
			}
		}
		return list, added, nil
	})
}

// Unexpose removes entries from the allow list and their stubs from the guest.
func Unexpose(ctx context.Context, g provision.Guest, nameOrDir string, names []string, opts ProvisionOptions) ([]provision.Exposed, error) {
	return editExposed(ctx, g, nameOrDir, opts, func(list []provision.Exposed) ([]provision.Exposed, []provision.Exposed, error) {
		return provision.RemoveExposed(list, names)
	})
}

// editExposed changes the VM's allow list by edit (which returns the new list and the
// entries it added or removed), saves it, has the relay reload it and provisions the
// stubs. It returns edit's entries, also when provisioning failed.
func editExposed(ctx context.Context, g provision.Guest, nameOrDir string, opts ProvisionOptions,
	edit func([]provision.Exposed) ([]provision.Exposed, []provision.Exposed, error)) ([]provision.Exposed, error) {
	dir, err := vm.StateDirOf(nameOrDir)
	if err != nil {
		return nil, err
	}
	list, err := provision.LoadExposed(dir)
	if err != nil {
		return nil, err
	}
	list, changed, err := edit(list)
	if err != nil {
		return nil, err
	}
	if err := saveAndReload(ctx, g, dir, list); err != nil {
		return nil, err
	}
	if _, err := Provision(ctx, g, dir, opts); err != nil {
		return changed, err
	}
	return changed, nil
}

// saveAndReload writes the allow list (it outlives the hostagent) and has the relay
// serve it before any stub for it exists in the guest.
func saveAndReload(ctx context.Context, g provision.Guest, dir string, list []provision.Exposed) error {
	a, err := agentOf(g)
	if err != nil {
		return err
	}
	if err := provision.SaveExposed(dir, list); err != nil {
		return err
	}
	if err := a.Call(ctx, RequestRelayReload, nil, nil); err != nil {
		return fmt.Errorf("machine: the relay did not take the new allow list: %w", err)
	}
	return nil
}

// Interop turns the binfmt rules of the VM named nameOrDir (or its state dir) on or off:
// the built-in ones, whichever names they were provisioned with (WSLInterop or lab-pe), and
// its configured formats'.
func Interop(ctx context.Context, g provision.Guest, nameOrDir string, on bool) error {
	dir, err := vm.StateDirOf(nameOrDir)
	if err != nil {
		return err
	}
	rules, err := RulesOf(dir)
	if err != nil {
		return err
	}
	return provision.SetInterop(ctx, g, rules, on)
}
