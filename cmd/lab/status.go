package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newStatusCommand() *cobra.Command {
	var name string
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a VM's state, accelerator, vsock and hostagent health",
		Long: `status computes a VM's state from its processes, QMP and its hostagent:
running, booting, broken (running, but e.g. the vsock backend died and the VM
must restart), stopping or stopped (with why QEMU ended).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var views []*machine.Status
			if all {
				var err error
				if views, err = machine.List(cmd.Context()); err != nil {
					return err
				}
			} else {
				st, err := machine.Inspect(cmd.Context(), name)
				if err != nil {
					return err
				}
				views = []*machine.Status{st}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if all {
					return enc.Encode(views)
				}
				return enc.Encode(views[0])
			}
			for i, v := range views {
				if i > 0 {
					fmt.Fprintln(out)
				}
				printStatus(out, v)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", vm.DefaultName, "VM name")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&all, "all", false, "every VM")
	return cmd
}

func printStatus(w io.Writer, v *machine.Status) {
	st := v.Status
	p := func(k, format string, args ...any) { fmt.Fprintf(w, "%-10s %s\n", k+":", fmt.Sprintf(format, args...)) }
	p("name", "%s", st.Name)
	p("state", "%s", st.State)
	accel := st.Accel
	if st.AccelReason != "" {
		accel += " (" + st.AccelReason + ")"
	}
	if st.KVMEnabled != nil {
		accel += fmt.Sprintf("; QEMU: kvm enabled=%v", *st.KVMEnabled)
	}
	p("accel", "%s", accel)
	vs := fmt.Sprintf("%s, guest CID %d", st.Vsock, st.CID)
	if h := st.Health; h != nil {
		if h.VsockOK {
			vs += ", backend ok"
		} else {
			vs += ", DEAD: " + h.VsockError
		}
		if d := h.VsockDevice; d != nil {
			vs += fmt.Sprintf("; device: %d connections, %d refused at its connection limit, %d B from the guest, %d B to it",
				d.Conns, d.Refused, d.TxBytes, d.RxBytes)
		}
	}
	p("vsock", "%s", vs)
	p("ssh", "127.0.0.1:%d (%s)", st.SSHPort, st.SSHCommand)
	q := "not running"
	if st.QEMUAlive {
		q = fmt.Sprintf("pid %d, %s", st.QEMUPID, st.QEMUStatus)
	}
	p("qemu", "%s", q)
	a := "not running"
	if st.AgentAlive {
		a = fmt.Sprintf("pid %d", st.AgentPID)
		if h := st.Health; h != nil {
			a += fmt.Sprintf(", %s, up %s", h.Phase, time.Since(h.Started).Round(time.Second))
			if h.BootSeconds > 0 {
				a += fmt.Sprintf(", booted in %.1fs", h.BootSeconds)
			}
			if h.GuestSSH {
				a += ", guest SSH connected"
			}
			for _, t := range h.Tasks {
				a += fmt.Sprintf(", task %s %s", t.Name, t.State)
			}
		} else {
			a += ", not answering"
		}
	}
	p("hostagent", "%s", a)
	if r := v.Relay; r != nil {
		rs := fmt.Sprintf("%s on %s (guest CID %d), %d exposed", r.State, r.Listen, r.PeerCID, r.Exposed)
		if r.Error != "" {
			rs += ": " + r.Error
		}
		p("relay", "%s", rs)
		p("sessions", "%d total, %d active, %d launched, %d refused, %d errors; %d B in, %d B out",
			r.Stats.Sessions, r.Stats.Active, r.Stats.Launched, r.Stats.Refused, r.Stats.Errors, r.Stats.BytesIn, r.Stats.BytesOut)
	}
	if pe := v.PE; pe != nil {
		s := pe.State
		if pe.Prefix != "" {
			s += ", prefix " + pe.Prefix
		}
		if pe.WineVersion != "" {
			s += ", " + pe.WineVersion
		}
		if pe.Error != "" {
			s += ": " + pe.Error
		}
		p("pe", "%s", s)
	}
	for _, f := range v.Formats {
		p("format", "%s", f)
	}
	p("guest", "%s, %d CPUs, %d MiB, kernel %s", st.Arch, st.CPUs, st.MemoryMiB, st.Kernel)
	if st.Image != "" {
		p("image", "%s", st.Image)
	}
	if st.Disk != "" {
		p("disk", "%s (%s, %.0f MB on the host; kept by lab down)", st.Disk, st.Distro, float64(st.DiskUse)/1e6)
	}
	for _, sh := range st.Shares {
		ro := ""
		if sh.ReadOnly {
			ro = " (read-only)"
		}
		p("share", "%s -> %s%s", sh.HostPath, sh.GuestPath, ro)
	}
	p("console", "%s", st.ConsoleLog)
	p("log", "%s", st.AgentLog)
	for _, pr := range st.Problems {
		p("problem", "%s", strings.ReplaceAll(pr, "\n", "\n           "))
	}
}
