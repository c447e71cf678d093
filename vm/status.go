package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"lab/vm/qmp"
)

// ErrNotFound is returned for a VM name without a state directory.
var ErrNotFound = errors.New("vm: no such VM")

// Status is a VM's state, computed from its pids, sockets, QMP and the hostagent;
// nothing of it is stored.
type Status struct {
	Name     string `json:"name"`
	StateDir string `json:"state_dir"`
	// State is "running" (ready for commands), "booting", "broken" (running but
	// something it needs is gone: see Problems), "stopping" or "stopped".
	State       string    `json:"state"`
	Accel       string    `json:"accel"` // the accelerator QEMU was started with
	AccelReason string    `json:"accel_reason,omitempty"`
	KVMEnabled  *bool     `json:"kvm_enabled,omitempty"` // what QEMU itself says (QMP query-kvm)
	QEMUStatus  string    `json:"qemu_status,omitempty"` // QMP query-status: "running", "paused", ...
	Vsock       string    `json:"vsock"`                 // "kernel" or "user"
	CID         uint32    `json:"cid"`
	SSHPort     int       `json:"ssh_port"`
	MemoryMiB   int       `json:"memory_mib"`
	CPUs        int       `json:"cpus"`
	Shares      []Share   `json:"shares,omitempty"`
	Kernel      string    `json:"kernel_version,omitempty"`
	Distro      string    `json:"distro,omitempty"`   // zero: the initramfs image
	Disk        string    `json:"disk,omitempty"`     // the machine's own disk (Debian)
	DiskUse     int64     `json:"disk_use,omitempty"` // bytes it takes on the host
	Created     time.Time `json:"created"`
	AgentPID    int       `json:"agent_pid,omitempty"`
	AgentAlive  bool      `json:"agent_alive"`
	QEMUPID     int       `json:"qemu_pid,omitempty"`
	QEMUAlive   bool      `json:"qemu_alive"`
	Health      *Health   `json:"agent_health,omitempty"` // from the hostagent, when it answers
	LastExit    *QEMUExit `json:"last_exit,omitempty"`    // why QEMU ended, when it did
	Problems    []string  `json:"problems,omitempty"`
	SSHCommand  string    `json:"ssh_command"`
	ConsoleLog  string    `json:"console_log"`
	AgentLog    string    `json:"agent_log"`
}

// Inspect computes the status of the VM with this name (or state directory).
func Inspect(nameOrDir string) (*Status, error) {
	dir, err := StateDirOf(nameOrDir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, FileInstance)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q (lab up --name %s)", ErrNotFound, nameOrDir, filepath.Base(dir))
		}
		return nil, fmt.Errorf("vm: %w", err)
	}
	return inspectDir(dir, true), nil
}

// List returns the status of every VM under the base state dir, by name.
func List() ([]*Status, error) {
	base, err := BaseStateDir()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vm: %w", err)
	}
	var out []*Status
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if _, err := os.Stat(filepath.Join(dir, FileInstance)); e.IsDir() && err == nil {
			out = append(out, inspectDir(dir, true))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func inspectDir(dir string, full bool) *Status {
	st := &Status{Name: filepath.Base(dir), StateDir: dir, State: "stopped",
		SSHCommand: "ssh -F " + filepath.Join(dir, FileSSHConfig) + " lab",
		ConsoleLog: filepath.Join(dir, FileConsoleLog), AgentLog: filepath.Join(dir, FileAgentLog)}
	in, err := readInstance(dir)
	if err != nil {
		st.Problems = append(st.Problems, "no readable "+FileInstance+": "+err.Error())
	} else {
		st.Name, st.Accel, st.AccelReason, st.Vsock = in.Name, in.Accel, in.AccelReason, in.Vsock
		st.CID, st.SSHPort, st.MemoryMiB, st.CPUs = in.CID, in.SSHPort, in.MemoryMiB, in.CPUs
		st.Shares, st.Kernel, st.Created = in.Shares, in.KernelVer, in.Created
		st.Distro, st.Disk = in.Distro, in.Disk
		if in.Disk != "" {
			st.DiskUse, _ = DiskUse(in.Disk)
		}
	}
	st.AgentPID = readPID(filepath.Join(dir, FileAgentPID))
	st.AgentAlive = agentAlive(dir)
	st.QEMUPID = readPID(filepath.Join(dir, FileQEMUPID))
	st.QEMUAlive = processAlive(st.QEMUPID, dir)
	var x QEMUExit
	if b, err := os.ReadFile(filepath.Join(dir, FileQEMUExit)); err == nil && json.Unmarshal(b, &x) == nil {
		st.LastExit = &x
	}
	if !full {
		return st
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if st.QEMUAlive {
		if c, err := qmp.Dial(ctx, filepath.Join(dir, FileQMPSock)); err == nil {
			if s, err := c.QueryStatus(ctx); err == nil {
				st.QEMUStatus = s.Status
			}
			if k, err := c.QueryKVM(ctx); err == nil {
				st.KVMEnabled = &k.Enabled
			}
			c.Close()
		} else {
			st.Problems = append(st.Problems, "QMP does not answer: "+err.Error())
		}
	}
	if st.AgentAlive {
		if ks, err := loadKeys(dir); err == nil {
			if h, err := agentHealth(ctx, dir, ks); err == nil {
				st.Health = h
			}
		}
	}
	switch {
	case st.AgentAlive && st.QEMUAlive:
		st.State = "booting"
		if st.Health != nil && st.Health.Phase == "ready" {
			st.State = "running"
		}
		if st.Health != nil && st.Health.Phase == "stopping" {
			st.State = "stopping"
		}
		if st.Health != nil && !st.Health.VsockOK {
			st.State = "broken"
			st.Problems = append(st.Problems, "vsock is dead: "+st.Health.VsockError+
				" (QEMU cannot reconnect to a new backend: restart the VM with lab down; lab up)")
		}
		if st.Health != nil {
			for _, t := range st.Health.Tasks {
				if t.State == "failed" {
					st.Problems = append(st.Problems, fmt.Sprintf("hostagent task %s failed: %s", t.Name, t.Error))
				}
			}
		}
		if st.QEMUStatus != "" && st.QEMUStatus != "running" {
			st.Problems = append(st.Problems, "QEMU reports "+st.QEMUStatus)
		}
	case st.AgentAlive:
		st.State = "stopping"
		st.Problems = append(st.Problems, "QEMU is not running")
	case st.QEMUAlive:
		st.State = "broken"
		st.Problems = append(st.Problems, "the hostagent is gone but QEMU runs (lab down cleans up)")
	default:
		st.State = "stopped"
		if st.LastExit != nil {
			msg := "QEMU exited"
			if st.LastExit.Error != "" {
				msg += ": " + st.LastExit.Error
			}
			st.Problems = append(st.Problems, msg+" at "+st.LastExit.Time.Format(time.RFC3339)+" (lab down cleans up)")
		} else {
			st.Problems = append(st.Problems, "neither the hostagent nor QEMU runs (lab down cleans up)")
		}
	}
	return st
}

func agentHealth(ctx context.Context, dir string, ks *keys) (*Health, error) {
	c, err := dialAgent(ctx, dir, ks)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ok, payload, err := c.SendRequest(healthRequest, true, nil)
	if err != nil || !ok {
		return nil, fmt.Errorf("vm: hostagent health: %v", err)
	}
	var h Health
	if err := json.Unmarshal(payload, &h); err != nil {
		return nil, fmt.Errorf("vm: hostagent health: %w", err)
	}
	return &h, nil
}
