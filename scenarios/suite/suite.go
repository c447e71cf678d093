// Package suite runs the scenario suite (package scenarios) against one of lab's VMs:
// it builds the fixtures into the VM's first share, exposes the host fixtures, and
// gives the engine the VM's SSH connection, its relay log and control over the VM.
package suite

import (
	"context"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"sort"

	"lab/images"
	"lab/machine"
	"lab/pefixtures"
	"lab/provision"
	"lab/scenarios"
	"lab/vm"
	"lab/wineprefix"
)

// Guest is a connection to the VM (vm.Client).
type Guest interface {
	scenarios.Guest
}

// FixtureDirName is the directory the suite builds its fixtures in, inside the share.
const FixtureDirName = ".lab-fixtures"

// Options for Env.
type Options struct {
	Interpreter string    // passed to provisioning; zero: found next to the executable
	Progress    io.Writer // setup progress; nil: silent
}

// EnvOf prepares the machine m for the suite (over its guest connection) and returns
// the engine's environment.
func EnvOf(ctx context.Context, m *machine.Machine, opts Options) (scenarios.Env, error) {
	g, err := m.Guest(ctx)
	if err != nil {
		return scenarios.Env{}, err
	}
	return Env(ctx, g, m.StateDir, opts)
}

// Env prepares the VM in stateDir for the suite and returns the engine's environment.
func Env(ctx context.Context, g Guest, stateDir string, opts Options) (scenarios.Env, error) {
	in, err := machine.Instance(stateDir)
	if err != nil {
		return scenarios.Env{}, err
	}
	share, err := fixtureShare(in)
	if err != nil {
		return scenarios.Env{}, err
	}
	hostShare, err := filepath.EvalSymlinks(share.HostPath)
	if err != nil {
		return scenarios.Env{}, fmt.Errorf("suite: share: %w", err)
	}
	// PE scenarios need the Windows personality: Wine on the host and the VM's prefix
	// shared at /mnt/c (lab up does both when Wine is installed).
	_, wine := lookWine()
	driveC := ""
	if dir := machine.PrefixOf(in); dir != "" && wine {
		driveC = filepath.Join(dir, "drive_c")
	} else {
		wine = false
	}
	say(opts.Progress, "building the fixtures into %s", filepath.Join(hostShare, FixtureDirName))
	guestArch := "amd64"
	if res, err := provisionQuiet(ctx, g, stateDir, opts); err == nil {
		guestArch = res.Arch
	} else {
		return scenarios.Env{}, err
	}
	fx, err := scenarios.BuildFixtures(ctx, filepath.Join(hostShare, FixtureDirName), guestArch, true)
	if err != nil {
		return scenarios.Env{}, err
	}
	peDir := ""
	if wine {
		peDir = filepath.Join(hostShare, FixtureDirName, "pe")
		say(opts.Progress, "building the Windows fixtures (pefixtures) into %s", peDir)
		if _, err := pefixtures.Build(ctx, peDir); err != nil {
			return scenarios.Env{}, err
		}
	}
	var progs []string
	for _, p := range fx.Host {
		progs = append(progs, p)
	}
	sort.Strings(progs)
	say(opts.Progress, "exposing %d host fixtures (host-hello, host-echo, ...)", len(progs))
	if _, err := machine.Expose(ctx, g, stateDir, progs, "", machine.ProvisionOptions{Interpreter: opts.Interpreter}); err != nil {
		return scenarios.Env{}, err
	}
	ctl := &machine.Control{Guest: g, StateDir: stateDir, Opts: machine.ProvisionOptions{Interpreter: opts.Interpreter}}
	// [systemd]: the scenarios of systemd guests (the Debian image).
	code, err := g.Run(ctx, "[ -d /run/systemd/system ]", nil, io.Discard, io.Discard)
	if err != nil {
		return scenarios.Env{}, fmt.Errorf("suite: %w", err)
	}
	systemd := code == 0
	return scenarios.Env{
		Guest:      g,
		Control:    ctl,
		ShareHost:  hostShare,
		ShareGuest: share.GuestPath,
		Fixtures:   fx.Dir,
		Conds:      map[string]bool{"wine": wine, "systemd": systemd},
		// $DRIVEC: the host's view of the guest's /mnt/c; $PEFIX: the built PE fixtures.
		Vars:     map[string]string{"DRIVEC": driveC, "PEFIX": peDir},
		RelayLog: ctl.RelayLogSince,
		GuestVars: map[string]string{
			"LABEXEC": path.Join(share.GuestPath, FixtureDirName, "labexec"),
			"LABIDLE": path.Join(share.GuestPath, FixtureDirName, "labidle"),
		},
		Stub: func(name string) []byte {
			return machine.Stub(provision.Exposed{Name: name})
		},
		Machine: machineOf(in),
	}, nil
}

// machineOf names what the run runs on for the report.
func machineOf(in *vm.Instance) *scenarios.Machine {
	arch := in.Arch
	if arch == "" {
		arch = "amd64" // VMs started before arm64 guests
	}
	distro := in.Distro
	if distro == "" {
		distro = images.DistroInitramfs
	}
	m := &scenarios.Machine{Name: in.Name, Arch: arch, Distro: distro, Kernel: in.KernelVer, Accel: in.Accel}
	if in.Image != "" {
		m.Image = filepath.Base(in.Image)
	}
	return m
}

// fixtureShare is the share the suite builds its fixtures in: the VM's scratch share
// (lab up gives every VM one at /mnt/lab), else its first writable share that is not
// the Windows personality's drive_c (a guest path there is C:\..., not a host path).
func fixtureShare(in *vm.Instance) (*vm.Share, error) {
	var first *vm.Share
	for i := range in.Shares {
		sh := &in.Shares[i]
		if sh.Tag == vm.ScratchTag {
			return sh, nil
		}
		if !sh.ReadOnly && first == nil && !sh.IsDriveC() {
			first = sh
		}
	}
	if first == nil {
		return nil, fmt.Errorf("suite: VM %q has no writable share for the scenarios' fixtures (it was started with lab up --no-scratch, or by an older lab): lab down --name %s, then lab up --name %s", in.Name, in.Name, in.Name)
	}
	return first, nil
}

func provisionQuiet(ctx context.Context, g Guest, stateDir string, opts Options) (*provision.Result, error) {
	return machine.Provision(ctx, g, stateDir, machine.ProvisionOptions{Interpreter: opts.Interpreter})
}

// lookWine reports whether the host can run PE files with Wine (the relay's PE runner).
func lookWine() (string, bool) {
	p, err := wineprefix.Loader("")
	return p, err == nil
}

func say(w io.Writer, format string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, "suite: "+format+"\n", a...)
	}
}
