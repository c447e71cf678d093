package vm

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Phase is the hostagent's phase.
type Phase string

const (
	PhaseBooting  Phase = "booting"
	PhaseReady    Phase = "ready"
	PhaseStopping Phase = "stopping"
)

// Health is the hostagent's view, computed for each lab status (request lab-health@lab).
type Health struct {
	Phase       Phase        `json:"phase"`
	Started     time.Time    `json:"started"`
	BootSeconds float64      `json:"boot_seconds,omitempty"`
	GuestSSH    bool         `json:"guest_ssh"` // the kept connection is up
	VsockOK     bool         `json:"vsock_ok"`  // the vsock backend serves QEMU
	VsockError  string       `json:"vsock_error,omitempty"`
	VsockDevice *VsockDevice `json:"vsock_device,omitempty"` // the user backend's counters; nil for kernel vsock
	QEMU        QEMUHealth   `json:"qemu"`
	Tasks       []TaskHealth `json:"tasks,omitempty"`
}

// VsockDevice is the userspace vsock device's figures (vhostvsock.Stats), read now.
type VsockDevice struct {
	Conns int `json:"conns"` // connections open
	// Refused counts the guest's connections refused because the device's connection
	// limit was reached: a guest that sees ECONNRESET/ECONNREFUSED on connect finds why here.
	Refused uint64 `json:"refused"`
	TxBytes uint64 `json:"tx_bytes"` // payload bytes from the guest
	RxBytes uint64 `json:"rx_bytes"` // payload bytes to the guest
	// The data path's counters (JSON only): per byte, they show how often the guest and the
	// device notify each other and how many packets a transfer costs (lab bench's raw vsock).
	TxPackets  uint64 `json:"tx_packets"` // packets from the guest
	RxPackets  uint64 `json:"rx_packets"` // packets to the guest
	Kicks      uint64 `json:"kicks"`      // guest -> device notifications
	Interrupts uint64 `json:"interrupts"` // device -> guest notifications
	Passes     uint64 `json:"passes"`     // ring worker passes
}

// QEMUHealth is what QEMU says over QMP, asked for this request.
type QEMUHealth struct {
	Status        string        `json:"status,omitempty"` // query-status: "running", "paused", "shutdown", ...
	NotResponding bool          `json:"not_responding,omitempty"`
	Error         string        `json:"error,omitempty"`       // why Status is missing
	KVMEnabled    *bool         `json:"kvm_enabled,omitempty"` // query-kvm, asked at boot
	LastEvent     *MonitorEvent `json:"last_event,omitempty"`
}

// Bounds of the hostagent's QMP calls: go-qemu has no deadline, so a stopped QEMU
// would hold a caller forever; lab status must answer within a second.
const (
	statusQMPTimeout = 500 * time.Millisecond
	qmpCallTimeout   = 3 * time.Second
	reportTimeout    = 2 * time.Second
)

func (a *agent) setHealth(f func(*Health)) {
	a.mu.Lock()
	f(&a.health)
	a.mu.Unlock()
}

// healthNow computes the Health: QEMU asked now (bounded), each Task's report now.
func (a *agent) healthNow(ctx context.Context) Health {
	a.mu.Lock()
	h := a.health
	h.Tasks = append([]TaskHealth(nil), h.Tasks...)
	h.GuestSSH = a.guest != nil
	dev := a.vsockDev
	a.mu.Unlock()
	if dev != nil {
		st := dev.Stats()
		h.VsockDevice = &VsockDevice{Conns: st.Conns, Refused: st.Refused, TxBytes: st.TxBytes, RxBytes: st.RxBytes,
			TxPackets: st.TxPackets, RxPackets: st.RxPackets, Kicks: st.Kicks, Interrupts: st.Interrupts, Passes: st.Passes}
	}
	if a.mon != nil {
		qctx, cancel := context.WithTimeout(ctx, statusQMPTimeout)
		st, err := a.mon.queryStatus(qctx)
		cancel()
		if err != nil {
			h.QEMU.Error = err.Error()
			h.QEMU.NotResponding = errors.Is(err, ErrQEMUNotResponding)
		} else {
			h.QEMU.Status = st.Status.String()
		}
		h.QEMU.LastEvent = a.mon.lastEvent()
	}
	for i, t := range h.Tasks {
		f := a.reg.reporter(t.Name)
		if f == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, reportTimeout)
		b, err := json.Marshal(f(rctx))
		cancel()
		if err == nil {
			h.Tasks[i].Detail = b
		}
	}
	return h
}

// registerQMP registers the QMP operations clients may ask of the hostagent, which
// holds the VM's one QMP connection: qmp.query-status, qmp.powerdown and qmp.quit.
func (a *agent) registerQMP() {
	env := &Env{reg: a.reg}
	withMonitor := func(ctx context.Context, f func(ctx context.Context, m *monitor) (any, error)) (any, error) {
		if a.mon == nil {
			return nil, errors.New("QEMU's QMP monitor is not connected yet")
		}
		ctx, cancel := context.WithTimeout(ctx, qmpCallTimeout)
		defer cancel()
		return f(ctx, a.mon)
	}
	env.Handle(RequestQueryStatus, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return withMonitor(ctx, func(ctx context.Context, m *monitor) (any, error) {
			st, err := m.queryStatus(ctx)
			if err != nil {
				return nil, err
			}
			return QEMURunState{Status: st.Status.String(), Running: st.Running}, nil
		})
	})
	env.Handle(RequestPowerdown, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return withMonitor(ctx, func(ctx context.Context, m *monitor) (any, error) { return nil, m.powerdown(ctx) })
	})
	env.Handle(RequestQuit, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return withMonitor(ctx, func(ctx context.Context, m *monitor) (any, error) { return nil, m.quit(ctx) })
	})
}

// Requests the hostagent itself answers (Client.Call).
const (
	RequestQueryStatus = "qmp.query-status" // reply QEMURunState
	RequestPowerdown   = "qmp.powerdown"    // system_powerdown: the ACPI power button
	RequestQuit        = "qmp.quit"         // QEMU exits at once
)

// QEMURunState is the reply to RequestQueryStatus.
type QEMURunState struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}
