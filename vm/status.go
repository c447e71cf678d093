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

	"lab/internal/xdg"
)

// ErrNotFound is returned for a VM name without a state directory.
var ErrNotFound = errors.New("vm: no such VM")

// Status is a VM's state, computed from its pids, sockets, QMP and the hostagent;
// nothing of it is stored.
type Status struct {
	Name        string    `json:"name"`
	StateDir    string    `json:"state_dir"`
	State       State     `json:"state"`
	Accel       string    `json:"accel"` // the accelerator QEMU was started with
	AccelReason string    `json:"accel_reason,omitempty"`
	KVMEnabled  *bool     `json:"kvm_enabled,omitempty"` // what QEMU itself says (QMP query-kvm)
	QEMUStatus  string    `json:"qemu_status,omitempty"` // QMP query-status: "running", "paused", ...; or "not responding"
	Vsock       string    `json:"vsock"`                 // "kernel" or "user"
	CID         uint32    `json:"cid"`
	SSHPort     int       `json:"ssh_port"`
	MemoryMiB   int       `json:"memory_mib"`
	CPUs        int       `json:"cpus"`
	Shares      []Share   `json:"shares,omitempty"`
	Kernel      string    `json:"kernel_version,omitempty"`
	Arch        string    `json:"arch,omitempty"`     // guest architecture (amd64, arm64)
	Image       string    `json:"image,omitempty"`    // the image's cache dir
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

// State is a VM's state as lab status shows it.
type State string

const (
	StateRunning  State = "running"  // ready for commands
	StateBooting  State = "booting"  // QEMU and the hostagent run; the guest is not ready yet
	StateBroken   State = "broken"   // running, but something it needs is gone: see Problems
	StateStopping State = "stopping" // the hostagent is stopping QEMU
	StateStopped  State = "stopped"  // neither QEMU nor the hostagent runs (LastExit says why)
	// StateUnresponsive: QEMU runs but does not answer QMP (stopped with SIGSTOP, or
	// wedged); lab down still stops it (SIGKILL).
	StateUnresponsive State = "unresponsive"
)

// healthTimeout bounds the status request to the hostagent (which bounds its own
// question to QEMU much more tightly: a stopped QEMU costs lab status half a second).
const healthTimeout = 5 * time.Second

// Inspect computes the status of the VM with this name (or state directory). It asks
// the hostagent (which holds the VM's one QMP connection) and reads pids; a
// hostagent that is gone or does not answer is reported, not waited for.
func Inspect(ctx context.Context, nameOrDir string) (*Status, error) {
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
	return inspectDir(ctx, dir), nil
}

// List returns the status of every VM under the base state dir, by name.
func List(ctx context.Context) ([]*Status, error) {
	base, err := xdg.Dir(xdg.State)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vm: %w", err)
	}
	var out []*Status
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if _, err := os.Stat(filepath.Join(dir, FileInstance)); e.IsDir() && err == nil {
			out = append(out, inspectDir(ctx, dir))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func inspectDir(ctx context.Context, dir string) *Status {
	st := &Status{Name: filepath.Base(dir), StateDir: dir, State: StateStopped,
		SSHCommand: "ssh -F " + filepath.Join(dir, FileSSHConfig) + " lab",
		ConsoleLog: filepath.Join(dir, FileConsoleLog), AgentLog: filepath.Join(dir, FileAgentLog)}
	in, err := readInstance(dir)
	if err != nil {
		st.Problems = append(st.Problems, "no readable "+FileInstance+": "+err.Error())
	} else {
		st.Name, st.Accel, st.AccelReason, st.Vsock = in.Name, in.Accel, in.AccelReason, in.Vsock
		st.CID, st.SSHPort, st.MemoryMiB, st.CPUs = in.CID, in.SSHPort, in.MemoryMiB, in.CPUs
		st.Shares, st.Kernel, st.Created = in.Shares, in.KernelVer, in.Created
		st.Arch, st.Image = in.Arch, in.Image
		if st.Arch == "" {
			st.Arch = "amd64" // started before arm64 guests
		}
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
	if st.AgentAlive {
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		if ks, err := loadKeys(dir); err == nil {
			if h, err := agentHealth(hctx, dir, ks); err == nil {
				st.Health = h
			} else if _, serr := os.Stat(filepath.Join(dir, FileAgentSock)); serr == nil {
				// (Before the guest is ready there is no ha.sock: booting, not a problem.)
				st.Problems = append(st.Problems, "the hostagent does not answer: "+err.Error())
			}
		}
		cancel()
	}
	if h := st.Health; h != nil {
		st.QEMUStatus, st.KVMEnabled = h.QEMU.Status, h.QEMU.KVMEnabled
		if h.QEMU.NotResponding {
			st.QEMUStatus = "not responding"
		}
	}
	st.State, st.Problems = stateOf(st, st.Problems)
	return st
}

// stateOf derives the State and the problems to show from what inspectDir found.
func stateOf(st *Status, problems []string) (State, []string) {
	h := st.Health
	switch {
	case st.AgentAlive && st.QEMUAlive:
		state := StateBooting
		if h == nil {
			return state, problems
		}
		for _, t := range h.Tasks {
			if t.State == TaskFailed {
				problems = append(problems, fmt.Sprintf("hostagent task %s failed: %s", t.Name, t.Error))
			}
		}
		switch h.Phase {
		case PhaseReady:
			state = StateRunning
		case PhaseStopping:
			state = StateStopping
		}
		if !h.VsockOK {
			state = StateBroken
			problems = append(problems, "vsock is dead: "+h.VsockError+
				" (QEMU cannot reconnect to a new backend: restart the VM with lab down; lab up)")
		}
		switch {
		case h.QEMU.NotResponding:
			state = StateUnresponsive
			problems = append(problems, "QEMU is not responding to QMP (stopped, e.g. by SIGSTOP, or wedged): "+
				"kill -CONT "+fmt.Sprint(st.QEMUPID)+" resumes a stopped one; lab down kills it")
		case h.QEMU.Error != "":
			problems = append(problems, "QMP: "+h.QEMU.Error)
		case h.QEMU.Status != "" && h.QEMU.Status != "running":
			problems = append(problems, "QEMU reports "+h.QEMU.Status)
		}
		return state, problems
	case st.AgentAlive:
		return StateStopping, append(problems, "QEMU is not running")
	case st.QEMUAlive:
		return StateBroken, append(problems, "the hostagent is gone but QEMU runs (lab down cleans up)")
	case st.LastExit != nil:
		msg := "QEMU exited"
		if st.LastExit.Error != "" {
			msg += ": " + st.LastExit.Error
		}
		return StateStopped, append(problems, msg+" at "+st.LastExit.Time.Format(time.RFC3339)+" (lab down cleans up)")
	default:
		return StateStopped, append(problems, "neither the hostagent nor QEMU runs (lab down cleans up)")
	}
}

func agentHealth(ctx context.Context, dir string, ks *keys) (*Health, error) {
	c, err := dialAgent(ctx, dir, ks)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() }) // SendRequest takes no ctx
	defer stop()
	ok, payload, err := c.SendRequest(healthRequest, true, nil)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("vm: hostagent health: %w", ctx.Err())
	}
	if err != nil || !ok {
		return nil, fmt.Errorf("vm: hostagent health: %v", err)
	}
	var h Health
	if err := json.Unmarshal(payload, &h); err != nil {
		return nil, fmt.Errorf("vm: hostagent health: %w", err)
	}
	return &h, nil
}
