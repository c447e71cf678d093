package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const qmpGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`

// fakeQMP is a scripted QMP peer on a Unix socket, for the monitor's handling of
// go-qemu's limits; TestQMPListener and the integration tests speak to a real QEMU.
type fakeQMP struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder // go-qemu's commands end with no newline, as QEMU allows
}

// listenFakeQMP accepts one connection on a new socket; greet says whether it sends the
// greeting and answers qmp_capabilities.
func listenFakeQMP(t *testing.T, greet bool) (string, <-chan *fakeQMP) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan *fakeQMP, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		f := &fakeQMP{t: t, conn: c, dec: json.NewDecoder(c)}
		t.Cleanup(func() { c.Close() })
		if greet {
			f.send(qmpGreeting)
			f.expect("qmp_capabilities")
			f.send(`{"return": {}}`)
		}
		ch <- f
	}()
	return sock, ch
}

// connectedFakeQMP is a monitor connected to a fake QEMU that greeted it; it is
// closed at the end of the test.
func connectedFakeQMP(t *testing.T) (*monitor, *fakeQMP) {
	t.Helper()
	sock, fc := listenFakeQMP(t, true)
	m, err := connectMonitor(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.close)
	return m, <-fc
}

func (f *fakeQMP) send(line string) {
	fmt.Fprintf(f.conn, "%s\r\n", line)
}

// expect reads a command and checks its name.
func (f *fakeQMP) expect(want string) {
	var req struct {
		Execute string `json:"execute"`
	}
	if err := f.dec.Decode(&req); err != nil || req.Execute != want {
		f.t.Errorf("fake QMP: got %q (%v), want %s", req.Execute, err, want)
	}
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func TestMonitorEventsDoNotBlockCalls(t *testing.T) {
	m, f := connectedFakeQMP(t)
	// go-qemu sends each event on an unbuffered channel: undrained, the reply behind
	// them would never be read.
	for i := range 100 {
		f.send(fmt.Sprintf(`{"event": "RESUME", "timestamp": {"seconds": %d, "microseconds": 0}}`, 1000+i))
	}
	f.send(`{"event": "POWERDOWN", "timestamp": {"seconds": 2000, "microseconds": 5}}`)
	go func() {
		f.expect("query-status")
		f.send(`{"return": {"running": true, "singlestep": false, "status": "running"}}`)
	}()
	st, err := m.queryStatus(context.Background())
	if err != nil || st.Status.String() != "running" || !st.Running {
		t.Fatalf("query-status = %+v, %v", st, err)
	}
	if ev := m.lastEvent(); ev == nil || ev.Name != "POWERDOWN" || ev.Time.Unix() != 2000 {
		t.Errorf("last event = %+v; want POWERDOWN at 2000", ev)
	}
}

// TestMonitorNotResponding: a command QEMU does not answer (it is stopped) ends with
// the caller's ctx, and so does a later one (the first still holds the monitor); once
// QEMU answers the first, the monitor serves again.
func TestMonitorNotResponding(t *testing.T) {
	m, f := connectedFakeQMP(t)
	read := make(chan struct{})
	go func() { f.expect("query-status"); close(read) }()
	if _, err := m.queryStatus(shortCtx(t)); !errors.Is(err, ErrQEMUNotResponding) {
		t.Fatalf("unanswered query-status: %v; want ErrQEMUNotResponding", err)
	}
	if err := m.powerdown(shortCtx(t)); !errors.Is(err, ErrQEMUNotResponding) ||
		err.Error() != "vm: QMP system_powerdown: QEMU is not responding (an earlier command is still unanswered)" {
		t.Fatalf("command behind it: %v", err)
	}
	<-read
	f.send(`{"return": {"running": false, "singlestep": false, "status": "paused"}}`) // late answer to the first
	go func() {
		f.expect("system_powerdown")
		f.send(`{"error": {"class": "GenericError", "desc": "no ACPI"}}`)
	}()
	if err := m.powerdown(context.Background()); err == nil || err.Error() != "vm: QMP system_powerdown: no ACPI" {
		t.Errorf("refused system_powerdown: %v; want QEMU's description", err)
	}
}

// TestMonitorConnectNotResponding: a QEMU that accepts but never greets (stopped) makes
// connectMonitor return when ctx ends.
func TestMonitorConnectNotResponding(t *testing.T) {
	sock, _ := listenFakeQMP(t, false)
	_, err := connectMonitor(shortCtx(t), sock)
	if !errors.Is(err, ErrQEMUNotResponding) || !strings.HasPrefix(err.Error(), "vm: QMP handshake: QEMU is not responding") {
		t.Fatalf("connect to a silent QEMU: %v", err)
	}
}
