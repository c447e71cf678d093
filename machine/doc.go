// Package machine is one lab machine: a QEMU guest (package vm) with the interop relay
// (package host) and, when Wine is installed, the Windows personality (package
// wineprefix) beside it, provisioned so that the guest runs host programs (package
// provision). It is the one place that knows all of these at once; the CLI (cmd/lab),
// lab demo, lab bench and the scenario suite all go through it.
//
// # Layers
//
//	guest -- wire -- host        the interop core (interpreter, protocol, relay)
//	images, vm                   the guest image; QEMU and its hostagent
//	provision                    what a guest needs, over SSH
//	machine                      this package: the above composed into one machine
//	scenarios, cmd/lab           what users run
//
// Package provision knows only a guest reached over SSH; package vm knows only QEMU and
// its hostagent, which runs tasks it is given. This package gives the hostagent its
// tasks (Tasks: the relay and the Wine prefix) and turns a VM's state directory into
// provisioning (Config): hence neither of those imports the other, and neither imports
// the relay or Wine.
//
// # A machine's life
//
//	Up:   Wine prefix (C: of the machine, kept across Down, shared at /mnt/c)
//	      -> vm.Up (image, QEMU, hostagent with Tasks: relay + Wine kept warm)
//	      -> connect (the hostagent's kept SSH connection) -> Provision
//	Expose, Unexpose, Interop(on), Provision: change the running machine
//	Inspect: one status computed from the VM, its hostagent, the relay and Wine
//	Down: vm.Down (ACPI, quit, kill; state dir removed) -> the prefix's wineserver stopped
//
// Up fails whole: on any error nothing it started is left running. What a machine is
// made of is on disk in its state directory (package vm's instance record, the token,
// the allow list of exposed commands, the formats), so a second process (lab expose,
// lab status) opens a running machine by name (Open) and the hostagent serves the
// relay from the same files.
package machine
