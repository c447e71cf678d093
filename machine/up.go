package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"lab/images"
	"lab/provision"
	"lab/vm"
	"lab/wineprefix"
)

// Options say which machine Up makes. Every field documents its zero value.
type Options struct {
	// VM is the virtual machine (name, accelerator, vsock, shares, size, ...); its
	// Progress is replaced by Options.Progress. Zero: package vm's defaults.
	VM vm.Config
	// NoScratch leaves out the writable scratch share lab owns at vm.DefaultScratch
	// (where lab run builds its fixtures); a share of VM.Shares mounted there takes its
	// place anyway. Zero: the scratch share.
	NoScratch bool
	// NoWindows leaves out the Windows personality. Zero: when Wine is installed the
	// machine gets the Windows side every machine of the user shares (SharedPrefixDir,
	// kept by Down, as WSL's distributions share one C:) whose drive_c the guest sees
	// read-write at /mnt/c.
	NoWindows bool
	// IsolatedWindows gives the machine a Wine prefix of its own (PrefixDir, removed by
	// lab delete) instead of the shared one. Zero: the shared Windows side.
	IsolatedWindows bool
	// NoProvision boots only: no interpreter, rules or configuration in the guest.
	NoProvision bool
	// Provision are the options of the provisioning after boot; its Progress, when nil,
	// is Options.Progress.
	Provision ProvisionOptions
	// Progress gets the progress lines of the Wine prefix, the image build, the boot and
	// the provisioning; nil: silent.
	Progress io.Writer
}

// Up makes the machine: its Wine prefix (unless NoWindows; without Wine on the host it
// carries on without and says so in WindowsOff and on Progress), the VM booted under its
// hostagent, then provisioning over the hostagent's connection. The machine's guest
// connection stays open for the caller: Close it (the machine keeps running) or Down.
// On failure nothing is left running.
func Up(ctx context.Context, opts Options) (*Machine, error) {
	cfg := opts.VM
	cfg.Shares = slices.Clone(cfg.Shares) // callers share one list between machines (lab run --parallel)
	cfg.Progress = opts.Progress
	if cfg.Name == "" {
		cfg.Name = vm.DefaultName
	}
	if cfg.Name == SharedWindows {
		return nil, ErrReservedName
	}
	if cfg.Distro == images.DistroDebian && cfg.Disk == "" {
		// The machine's own disk lives in its data dir: lab down keeps it, lab delete removes it.
		dir, err := DataDir(cfg.Name)
		if err != nil {
			return nil, err
		}
		cfg.Disk = filepath.Join(dir, "disk.qcow2")
	}
	if !opts.NoScratch && cfg.Scratch == "" && !mountsAt(cfg.Shares, vm.DefaultScratch) {
		cfg.Scratch = vm.DefaultScratch
	}
	if !opts.NoProvision && opts.Provision.Interpreter == "" {
		// Fail before booting rather than after: the interpreter must match the guest's architecture.
		arch, err := images.NormalizeArch(cfg.Arch)
		if err != nil {
			return nil, fmt.Errorf("--arch: %w", err)
		}
		if _, err := provision.FindInterpreter(arch); err != nil {
			return nil, fmt.Errorf("%w (or boot without interop: lab up --no-provision)", err)
		}
	}
	m := &Machine{Name: cfg.Name, Progress: opts.Progress}
	if !opts.NoWindows {
		t := time.Now()
		sh, err := m.ensureWindows(ctx, opts.IsolatedWindows)
		m.Took.Windows = time.Since(t)
		if err != nil {
			return nil, err
		}
		if sh != nil {
			cfg.Shares = append(cfg.Shares, *sh)
		}
	}
	po := opts.Provision
	if po.Progress == nil {
		po.Progress = opts.Progress
	}
	if !opts.NoProvision && cfg.BootFiles == nil {
		cfg.BootFiles = SeedFiles(po)
	}
	t := time.Now()
	in, err := vm.Up(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m.Took.Boot = time.Since(t)
	m.Instance, m.Name, m.StateDir, m.ref = in, in.Name, in.StateDir, in.StateDir
	if opts.NoProvision {
		return m, nil
	}
	t = time.Now()
	_, err = m.Provision(ctx, po)
	m.Took.Provision = time.Since(t)
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := m.Down(dctx); derr != nil {
			return nil, fmt.Errorf("%w; and stopping the VM failed: %v (run lab down --name %s)", err, derr, in.Name)
		}
		return nil, fmt.Errorf("%w (the VM was stopped)", err)
	}
	return m, nil
}

// ensureWindows makes (or finds) the machine's Wine prefix (the shared one, or with
// isolated the machine's own) and returns the share of its drive_c; nil without Wine on
// the host (m.WindowsOff says so).
func (m *Machine) ensureWindows(ctx context.Context, isolated bool) (*vm.Share, error) {
	dir, err := SharedPrefixDir()
	if isolated {
		dir, err = PrefixDir(m.Name)
	}
	if err != nil {
		return nil, err
	}
	p, sh, err := EnsureWindows(ctx, dir, m.Progress)
	if errors.Is(err, wineprefix.ErrNoWine) {
		m.WindowsOff = err
		m.say("lab: no Windows personality: %v", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w (or run lab up --no-windows)", err)
	}
	m.Windows = p
	return &sh, nil
}

// ErrReservedName is Up's error for the one machine name lab keeps for itself.
var ErrReservedName = fmt.Errorf("the name %q is the Windows side all machines share ($XDG_DATA_HOME/lab/%s): choose another --name", SharedWindows, SharedWindows)

// mountsAt reports whether a share is mounted at guestPath.
func mountsAt(shares []vm.Share, guestPath string) bool {
	for _, sh := range shares {
		if filepath.Clean(sh.GuestPath) == guestPath {
			return true
		}
	}
	return false
}

// SeedFiles is the vm.Config.BootFiles that Up gives a machine it provisions: the guest's
// provisioning at boot (see seed). Exported for the suites that boot through vm.Up.
func SeedFiles(opts ProvisionOptions) func(*vm.Instance) ([]images.File, error) {
	return func(in *vm.Instance) ([]images.File, error) { return seed(in, opts) }
}

// seed is the provisioning the guest gets at boot (provision.Seed; provision.SeedDisk on
// a disk guest): the interpreter, its configuration, the token, the links and the rules
// are in place before sshd starts, so the provisioning after boot is one round trip
// instead of an upload of megabytes and an sshd restart.
func seed(in *vm.Instance, opts ProvisionOptions) ([]images.File, error) {
	opts.Progress = nil // the provisioning after boot reports
	cfg, err := Config(in.StateDir, opts)
	if err != nil {
		return nil, err
	}
	arch, err := images.NormalizeArch(in.Arch)
	if err != nil {
		return nil, err
	}
	seedFn := provision.Seed
	if in.Disk != "" {
		// A disk guest (Debian): staged in /run/lab/seed, which lab's initrd copies onto
		// the root's /run and lab-instance.service applies before systemd-binfmt and sshd.
		seedFn = provision.SeedDisk
	}
	seeded, err := seedFn(cfg, arch)
	if err != nil {
		return nil, err
	}
	files := make([]images.File, len(seeded))
	for i, f := range seeded {
		files[i] = images.File{Path: f.Path, Mode: f.Mode, Data: f.Data}
	}
	return files, nil
}
