package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/internal/labtest"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`

// step is one exchange of the scripted fake server: it waits for a request whose
// "execute" is want (skipped when empty) and writes the lines in send, with
// "$ID" replaced by the request's id.
type step struct {
	want string
	send []string
}

// fakeServer serves one client over a pipe following the script, then closes.
func fakeServer(t *testing.T, script []step) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	errc := make(chan error, 1)
	go func() {
		defer server.Close()
		r := bufio.NewReader(server)
		for _, st := range script {
			id := ""
			if st.want != "" {
				line, err := r.ReadBytes('\n')
				if err != nil {
					errc <- err
					return
				}
				var req struct {
					Execute   string          `json:"execute"`
					Arguments json.RawMessage `json:"arguments"`
					ID        string          `json:"id"`
				}
				if err := json.Unmarshal(line, &req); err != nil {
					errc <- err
					return
				}
				if req.Execute != st.want {
					errc <- errors.New("got command " + req.Execute + ", want " + st.want)
					return
				}
				id = req.ID
			}
			for _, s := range st.send {
				if _, err := server.Write([]byte(strings.ReplaceAll(s, "$ID", id) + "\r\n")); err != nil {
					errc <- err
					return
				}
			}
		}
		errc <- nil
	}()
	t.Cleanup(func() {
		if err := <-errc; err != nil {
			t.Errorf("fake server: %v", err)
		}
	})
	return client
}

func TestClientScripted(t *testing.T) {
	ctx := context.Background()
	conn := fakeServer(t, []step{
		{send: []string{greeting}},
		{want: "qmp_capabilities", send: []string{`{"return": {}, "id": "$ID"}`}},
		{want: "query-status", send: []string{
			`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`,
			`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "$ID"}`}},
		{want: "query-kvm", send: []string{`{"return": {"enabled": false, "present": true}, "id": "$ID"}`}},
		{want: "no-such", send: []string{`{"error": {"class": "CommandNotFound", "desc": "The command no-such has not been found"}, "id": "$ID"}`}},
		{want: "system_powerdown", send: []string{`{"return": {}, "id": "$ID"}`,
			`{"timestamp": {"seconds": 3, "microseconds": 0}, "event": "POWERDOWN"}`,
			`{"timestamp": {"seconds": 4, "microseconds": 0}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`}},
		{want: "quit", send: []string{`{"return": {}, "id": "$ID"}`}},
	})
	c, err := New(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.Greeting().QMP.Version.QEMU; v.Major != 7 || v.Minor != 2 {
		t.Errorf("greeting version = %+v", v)
	}
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	kvm, err := c.QueryKVM(ctx)
	if err != nil || kvm.Enabled || !kvm.Present {
		t.Fatalf("QueryKVM = %+v, %v", kvm, err)
	}
	err = c.Execute(ctx, "no-such", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("Execute(no-such) = %v, want *Error CommandNotFound", err)
	}
	if err := c.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := c.WaitEvent(ctx, "SHUTDOWN")
	if err != nil {
		t.Fatal(err)
	}
	var data struct{ Reason string }
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN data = %s (%v)", ev.Data, err)
	}
	if ev.Time().Unix() != 4 {
		t.Errorf("event time = %v", ev.Time())
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not notice the closed connection")
	}
	if err := c.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after close = %v, want ErrClosed", err)
	}
}

// A server that closes while a command is pending must fail it with ErrClosed.
func TestClientPendingOnClose(t *testing.T) {
	conn := fakeServer(t, []step{
		{send: []string{greeting}},
		{want: "qmp_capabilities", send: []string{`{"return": {}, "id": "$ID"}`}},
		{want: "query-status"}, // no answer: the script ends and closes
	})
	c, err := New(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.QueryStatus(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("QueryStatus = %v, want ErrClosed", err)
	}
}

func TestClientContext(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// The server never sends a greeting.
	if _, err := New(ctx, client); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New without greeting = %v, want DeadlineExceeded", err)
	}
}

func TestClientNotQMP(t *testing.T) {
	conn := fakeServer(t, []step{{send: []string{`{"hello": 1}`}}})
	if _, err := New(context.Background(), conn); err == nil {
		t.Fatal("New accepted a peer that is not QMP")
	}
}

// FuzzDecodeMessages feeds arbitrary server output to the decoder: it must return
// an error or stop at EOF, never panic.
func FuzzDecodeMessages(f *testing.F) {
	f.Add([]byte(greeting + "\n" + `{"return": {}, "id": "1"}`))
	f.Add([]byte(`{"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 1, "microseconds": 2}}`))
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "x"}, "id": "2"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"event": 5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		_ = decodeMessages(json.NewDecoder(bytes.NewReader(b)), func(m *message) {
			n++
			if m.Event != "" {
				var ev Event
				_ = json.Unmarshal(m.raw, &ev)
			}
		})
	})
}

// TestRealQEMU talks to a real qemu-system-x86_64 with no guest at all.
func TestRealQEMU(t *testing.T) {
	labtest.NeedVM(t)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(qemu, "-machine", "none", "-accel", "tcg", "-nodefaults", "-no-user-config",
		"-display", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c *Client
	for {
		c, err = Dial(ctx, sock)
		if err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("qemu exited: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("dial: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer c.Close()
	if c.Greeting().QMP.Version.QEMU.Major < 2 {
		t.Errorf("greeting: %+v", c.Greeting())
	}
	kvm, err := c.QueryKVM(ctx)
	if err != nil || kvm.Enabled {
		t.Errorf("QueryKVM under tcg = %+v, %v", kvm, err)
	}
	if _, err := c.QueryStatus(ctx); err != nil {
		t.Errorf("QueryStatus: %v", err)
	}
	var qe *Error
	if err := c.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v", err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("qemu after quit: %v", err)
		}
		exited <- nil
	case <-ctx.Done():
		t.Fatal("qemu did not exit after quit")
	}
}
