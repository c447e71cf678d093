package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"lab/machine"
)

func printMachines(w io.Writer, l *machine.Inventory) {
	if len(l.Machines) == 0 {
		fmt.Fprintln(w, "no machines (lab up makes one)")
	} else {
		fmt.Fprintf(w, "%-20s %-9s %-18s %-10s %s\n", "NAME", "STATE", "WINDOWS", "DISK", "TOTAL")
		for _, m := range l.Machines {
			win := m.Windows
			if m.Windows == "isolated" {
				win += " " + humanBytes(m.PrefixBytes)
			}
			if win == "" {
				win = "-"
			}
			disk := "-"
			if m.Disk != "" {
				disk = humanBytes(m.DiskBytes)
			}
			fmt.Fprintf(w, "%-20s %-9s %-18s %-10s %s\n", m.Name, m.State, win, disk, humanBytes(m.StateBytes+m.DataBytes))
		}
	}
	if s := l.Windows; s != nil {
		server := "no wineserver"
		if s.Server {
			server = "wineserver running"
		}
		fmt.Fprintf(w, "shared Windows side: %s, %s, used by %d running machine(s), %s\n", s.Prefix, humanBytes(s.Bytes), s.Users, server)
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// deleteMachine is machine.Delete with its bad-name errors as usage errors (exit 2).
func deleteMachine(ctx context.Context, name string, force bool, errOut io.Writer) (int64, error) {
	freed, err := machine.Delete(ctx, name, force, errOut)
	if ue := (*machine.UsageError)(nil); errors.As(err, &ue) {
		return 0, &usageError{ue.Err}
	}
	return freed, err
}
