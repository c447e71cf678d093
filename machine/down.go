package machine

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"lab/vm"
)

// Down stops the machine with this name (or state directory), as lab down does: the VM
// (ACPI power-off, then QEMU told to quit, then killed, each after a grace period), its
// hostagent, its state directory; then the wineserver of its Wine prefix, for when the
// hostagent was killed before its Wine task could stop it. The prefix itself (C: of the
// machine) is kept for the next Up. It also cleans up after a QEMU that crashed. A
// problem with the prefix is a line on warn (nil: dropped), not an error.
func Down(ctx context.Context, nameOrDir string, warn io.Writer) error {
	// The prefix outlives the state dir, which names it: find it first.
	prefix, name := "", nameOrDir
	if dir, err := vm.StateDirOf(nameOrDir); err == nil {
		name = filepath.Base(dir)
		if in, err := Instance(dir); err == nil {
			prefix = PrefixOf(in)
		}
	}
	if err := vm.Down(ctx, nameOrDir); err != nil {
		return err
	}
	if err := ShutdownWindows(ctx, prefix); err != nil && warn != nil {
		fmt.Fprintf(warn, "lab: %s: stopping the Wine prefix %s: %v\n", name, prefix, err)
	}
	return nil
}

// Down closes the machine's guest connection and stops it (see Down); warnings go to
// m.Progress.
func (m *Machine) Down(ctx context.Context) error {
	m.Close()
	return Down(ctx, m.ref, m.Progress)
}
