package vm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// ErrQEMUNotResponding says QEMU did not answer a QMP command in time: it is stopped
// (SIGSTOP), wedged, or an earlier command of ours is still unanswered.
var ErrQEMUNotResponding = errors.New("QEMU is not responding")

// monitor is a QEMU's one QMP connection, spoken through go-qemu (qmp.SocketMonitor
// and raw's typed calls). It is as thin as go-qemu's limits allow (measured against
// QEMU 7.2, see docs/DESIGN.md):
//   - Connect and Run take no context and the connection is unexported, so no deadline
//     can be set: each runs in a goroutine and the caller's ctx bounds its wait. A call
//     left behind (QEMU stopped) keeps the monitor's turn until QEMU answers or dies, so
//     later calls fail with ErrQEMUNotResponding instead of queueing. Whoever owns QEMU
//     kills it when stopping it times out; the connection then ends and so does the call.
//   - Once Events is called, an undrained event channel blocks Run and Disconnect: it
//     is called right after Connect and drained for the connection's life.
//   - A reply over 64 KiB ends the connection (bufio.Scanner's limit): only small
//     commands are sent (query-status, query-kvm, system_powerdown, quit).
//   - One client per socket: the hostagent holds it; lab status and lab down ask the
//     hostagent. Errors carry QEMU's description only (the QMP class is lost).
type monitor struct {
	sock *qmp.SocketMonitor
	raw  *raw.Monitor
	turn chan struct{} // holds a token while no call is in flight
	gone chan struct{} // closed when the connection ended (QEMU exited or Close)
	mu   sync.Mutex    // guards last
	last *MonitorEvent // the latest event QEMU sent
}

// MonitorEvent is a QMP event (SHUTDOWN, POWERDOWN, STOP, RESUME, ...) as lab keeps it.
type MonitorEvent struct {
	Name string    `json:"name"`
	Time time.Time `json:"time"` // QEMU's timestamp
}

// monitorDialTimeout bounds the socket connect (go-qemu's only timeout); the handshake
// is bounded by the caller's ctx.
const monitorDialTimeout = 5 * time.Second

// connectMonitor connects to the QMP socket at path. When ctx ends first it returns an
// error and the handshake goes on in the background (closed if it ever completes): go-qemu
// cannot interrupt it, and closing the connection under it would race with it.
func connectMonitor(ctx context.Context, path string) (*monitor, error) {
	sm, err := qmp.NewSocketMonitor("unix", path, monitorDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("vm: QMP: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- sm.Connect() }()
	select {
	case err := <-done:
		if err != nil {
			sm.Disconnect()
			return nil, fmt.Errorf("vm: QMP handshake: %w", err)
		}
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				sm.Disconnect()
			}
		}()
		return nil, fmt.Errorf("vm: QMP handshake: %w (%w)", ErrQEMUNotResponding, ctx.Err())
	}
	events, err := sm.Events(context.Background())
	if err != nil { // SocketMonitor.Events never fails; a Monitor might
		sm.Disconnect()
		return nil, fmt.Errorf("vm: QMP events: %w", err)
	}
	m := &monitor{sock: sm, raw: raw.NewMonitor(sm), turn: make(chan struct{}, 1), gone: make(chan struct{})}
	m.turn <- struct{}{}
	go m.drain(events)
	return m, nil
}

// drain reads every event until the connection ends (go-qemu closes the channel then).
func (m *monitor) drain(events <-chan qmp.Event) {
	defer close(m.gone)
	for e := range events {
		ev := &MonitorEvent{Name: e.Event, Time: time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)}
		m.mu.Lock()
		m.last = ev
		m.mu.Unlock()
	}
}

// lastEvent returns the latest event QEMU sent, nil if none.
func (m *monitor) lastEvent() *MonitorEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// call runs one command (f, with raw's typed methods) with ctx bounding the wait.
func (m *monitor) call(ctx context.Context, what string, f func(*raw.Monitor) error) error {
	select {
	case <-m.turn:
	case <-m.gone:
		return fmt.Errorf("vm: QMP %s: the QMP connection is closed (QEMU exited)", what)
	case <-ctx.Done():
		return fmt.Errorf("vm: QMP %s: %w (an earlier command is still unanswered)", what, ErrQEMUNotResponding)
	}
	done := make(chan error, 1)
	go func() {
		err := f(m.raw)
		m.turn <- struct{}{}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("vm: QMP %s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vm: QMP %s: %w (no answer)", what, ErrQEMUNotResponding)
	}
}

// queryStatus is QMP query-status: QEMU's run state ("running", "paused", "shutdown", ...).
func (m *monitor) queryStatus(ctx context.Context) (raw.StatusInfo, error) {
	var st raw.StatusInfo
	err := m.call(ctx, "query-status", func(r *raw.Monitor) (err error) {
		st, err = r.QueryStatus()
		return err
	})
	return st, err
}

// queryKVM is QMP query-kvm.
func (m *monitor) queryKVM(ctx context.Context) (raw.KVMInfo, error) {
	var k raw.KVMInfo
	err := m.call(ctx, "query-kvm", func(r *raw.Monitor) (err error) {
		k, err = r.QueryKVM()
		return err
	})
	return k, err
}

// powerdown is QMP system_powerdown: the ACPI power button.
func (m *monitor) powerdown(ctx context.Context) error {
	return m.call(ctx, "system_powerdown", (*raw.Monitor).SystemPowerdown)
}

// quit is QMP quit: QEMU exits at once.
func (m *monitor) quit(ctx context.Context) error {
	return m.call(ctx, "quit", (*raw.Monitor).Quit)
}

// close ends the connection. A call still in flight ends with it.
func (m *monitor) close() { m.sock.Disconnect() }
