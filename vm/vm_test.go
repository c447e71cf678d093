package vm

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"lab/images"
	"lab/internal/labtest"
)

func TestParseShare(t *testing.T) {
	tests := []struct {
		in      string
		want    Share
		wantErr bool
	}{
		{"/a:/mnt/a", Share{HostPath: "/a", GuestPath: "/mnt/a"}, false},
		{"/a:/mnt/a:ro", Share{HostPath: "/a", GuestPath: "/mnt/a", ReadOnly: true}, false},
		{"/a", Share{}, true},
		{":/mnt", Share{}, true},
		{"/a:", Share{}, true},
		{"/a:/b:rw", Share{}, true},
		{"/a:/b:ro:x", Share{}, true},
	}
	for _, tt := range tests {
		got, err := ParseShare(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseShare(%q) = %+v, %v; want %+v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/xdg")
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "default" || c.StateDir != "/xdg/lab/default" || c.Accel != "auto" || c.Vsock != "auto" ||
		c.MemoryMiB != 1024 || c.CPUs != 2 || c.QEMU != "qemu-system-x86_64" || c.BootTimeout != DefaultBootTimeout {
		t.Errorf("defaults: %+v", c)
	}
	for _, dc := range []Config{{Distro: images.DistroDebian, Disk: "/d.qcow2"}, {Image: &images.Image{Distro: images.DistroDebian}, Disk: "/d.qcow2"}} {
		if c, err := dc.withDefaults(); err != nil || c.BootTimeout != DefaultDiskBootTimeout {
			t.Errorf("Debian guest: boot timeout %v, %v; want %v", c.BootTimeout, err, DefaultDiskBootTimeout)
		}
	}
	c, err = Config{Shares: []Share{{HostPath: "/h", GuestPath: "/g"}, {HostPath: "/i", GuestPath: "/j", Tag: "x"}}}.withDefaults()
	if err != nil || c.Shares[0].Tag != "share0" || c.Shares[1].Tag != "x" {
		t.Errorf("share tags: %+v, %v", c.Shares, err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad name", Config{Name: "a b"}, "invalid VM name"},
		{"dot name", Config{Name: ".x"}, "invalid VM name"},
		{"bad accel", Config{Accel: "hvf"}, "--accel"},
		{"bad vsock", Config{Vsock: "tcp"}, "--vsock"},
		{"small memory", Config{MemoryMiB: 64}, "too little"},
		{"negative cpus", Config{CPUs: -1}, "CPUs"},
		{"relative guest path", Config{Shares: []Share{{HostPath: "/h", GuestPath: "g"}}}, "guest path"},
		{"duplicate tag", Config{Shares: []Share{{HostPath: "/h", GuestPath: "/g", Tag: "t"}, {HostPath: "/i", GuestPath: "/j", Tag: "t"}}}, "two shares"},
		{"scratch taken", Config{Scratch: "/mnt/lab", Shares: []Share{{HostPath: "/h", GuestPath: "/mnt/lab/"}}}, "vm: share /h:/mnt/lab/ takes the scratch share's place (/mnt/lab); mount it elsewhere"},
		{"relative scratch", Config{Scratch: "lab"}, `vm: scratch share guest path "lab": want an absolute path`},
		{"long state dir", Config{StateDir: "/" + strings.Repeat("d", 100)}, "too long"},
		{"state file path", Config{StateFiles: map[string][]byte{"../x": nil}}, `vm: state file "../x": want a plain file name that is not lab's own`},
		{"state file of lab's", Config{StateFiles: map[string][]byte{FileInstance: nil}}, `vm: state file "instance.json": want a plain file name that is not lab's own`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestStateDirOf(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/xdg")
	for in, want := range map[string]string{"": "/xdg/lab/default", "vm1": "/xdg/lab/vm1", "/abs/dir": "/abs/dir"} {
		if got, err := StateDirOf(in); err != nil || got != want {
			t.Errorf("StateDirOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := StateDirOf("bad name"); err == nil {
		t.Error("StateDirOf accepted a name with a space")
	}
}

func TestAllocateDistinct(t *testing.T) {
	base := t.TempDir()
	var cids []uint32
	ports := map[int]bool{}
	for i := range 4 {
		dir := filepath.Join(base, "vm"+strconv.Itoa(i))
		os.MkdirAll(dir, 0o700)
		cid, port, err := allocate(base, dir)
		if err != nil {
			t.Fatal(err)
		}
		if ports[port] {
			t.Errorf("port %d given twice", port)
		}
		ports[port] = true
		cids = append(cids, cid)
		if err := writeJSON(filepath.Join(dir, FileInstance), Instance{CID: cid, SSHPort: port}); err != nil {
			t.Fatal(err)
		}
	}
	for i, cid := range cids {
		if cid != uint32(3+i) {
			t.Errorf("CIDs = %v, want 3, 4, 5, 6", cids)
			break
		}
	}
	// A freed CID is reused.
	os.RemoveAll(filepath.Join(base, "vm1"))
	if cid, _, _ := allocate(base, filepath.Join(base, "new")); cid != 4 {
		t.Errorf("after freeing 4, got CID %d", cid)
	}
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("a\r\nb\nc\nd\n\n"), 0o600)
	if got := tail(p, 2); got != "c\nd" {
		t.Errorf("tail = %q", got)
	}
	if got := tail(p+"x", 2); got != "" {
		t.Errorf("tail of a missing file = %q", got)
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid(), "") {
		t.Error("this process is not alive")
	}
	if processAlive(os.Getpid(), "no-such-marker-in-cmdline") {
		t.Error("a process with another command line counts as ours")
	}
	if processAlive(0, "") || processAlive(1<<30, "") {
		t.Error("an impossible pid is alive")
	}
}

// fakeGuest is an in-process SSH server standing in for the guest's sshd. It runs
// a few fixed commands: "true", "exit N", "echo WORDS", "err WORDS" (to stderr),
// "cat" (stdin to stdout), "sleep" (until the client closes the channel), "kill"
// (exit-signal) and "connid" (the number of the SSH connection, from 1).
func fakeGuest(t *testing.T, hostKey ssh.Signer, clientKey ssh.PublicKey) string {
	t.Helper()
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), clientKey.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("denied")
	}}
	cfg.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conns := 0
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns++
			id := conns
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					go fakeSession(ch, creqs, id)
				}
			}()
		}
	}()
	return l.Addr().String()
}

func fakeSession(ch ssh.Channel, reqs <-chan *ssh.Request, connID int) {
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" {
			r.Reply(false, nil)
			continue
		}
		cmd := string(r.Payload[4:])
		r.Reply(true, nil)
		status := 0
		f := strings.Fields(cmd)
		switch {
		case len(f) == 0 || f[0] == "true":
		case f[0] == "exit":
			status, _ = strconv.Atoi(f[1])
		case f[0] == "echo":
			io.WriteString(ch, strings.Join(f[1:], " ")+"\n")
		case f[0] == "err":
			io.WriteString(ch.Stderr(), strings.Join(f[1:], " ")+"\n")
		case f[0] == "connid":
			fmt.Fprintln(ch, connID)
		case f[0] == "cat":
			io.Copy(ch, ch)
		case f[0] == "sleep":
			continue // until the client closes the channel
		case f[0] == "kill":
			sig := ssh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Msg, Lang  string
			}{"TERM", false, "", ""})
			ch.SendRequest("exit-signal", false, sig)
			return
		}
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(status)))
		return
	}
}

// TestProxyAgainstFakeGuest runs the hostagent's SSH endpoint against an in-process
// fake guest and drives it with Connect and Client.Run, as lab exec does.
func TestProxyAgainstFakeGuest(t *testing.T) {
	dir := t.TempDir()
	ctx, a, c := servedFakeGuest(t, dir)
	tests := []struct {
		cmd            string
		stdin          string
		exit           int
		stdout, stderr string
	}{
		{"true", "", 0, "", ""},
		{"exit 7", "", 7, "", ""},
		{"echo hello world", "", 0, "hello world\n", ""},
		{"err oops", "", 0, "", "oops\n"},
		{"cat", "some\ninput", 0, "some\ninput", ""},
		{"kill", "", 128 + 15, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			var out, errb bytes.Buffer
			var stdin io.Reader
			if tt.stdin != "" {
				stdin = strings.NewReader(tt.stdin)
			}
			code, err := c.Run(ctx, tt.cmd, stdin, &out, &errb)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.exit || out.String() != tt.stdout || errb.String() != tt.stderr {
				t.Errorf("Run(%q) = %d, %q, %q; want %d, %q, %q", tt.cmd, code, out.String(), errb.String(), tt.exit, tt.stdout, tt.stderr)
			}
		})
	}
	// A cancelled Run returns promptly with the context's error.
	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	if _, err := c.Run(rctx, "sleep", nil, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run(sleep) with a deadline = %v", err)
	}
	// Health over the same endpoint.
	h, err := agentHealth(ctx, dir, a.keys)
	if err != nil || h.Phase != "ready" || !h.GuestSSH {
		t.Errorf("health = %+v, %v", h, err)
	}
	// Requests for handlers a Task registered (Env.Handle), through Client.Call.
	env := &Env{reg: a.reg, task: "t"}
	env.Handle("t.echo", func(_ context.Context, args json.RawMessage) (any, error) {
		var v map[string]int
		err := json.Unmarshal(args, &v)
		return v, err
	})
	env.Handle("t.fail", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("no such thing") })
	env.Handle("t.stuck", func(context.Context, json.RawMessage) (any, error) {
		return nil, fmt.Errorf("vm: QMP quit: %w (no answer)", ErrQEMUNotResponding)
	})
	var got map[string]int
	if err := c.Call(ctx, "t.echo", map[string]int{"n": 7}, &got); err != nil || got["n"] != 7 {
		t.Errorf("Call(t.echo) = %v, %v", got, err)
	}
	callErrors := []struct {
		name, want    string
		notResponding bool
	}{
		{"t.fail", "vm: hostagent t.fail: no such thing", false},
		{"t.stuck", "vm: hostagent t.stuck: vm: QMP quit: QEMU is not responding (no answer)", true},
		{"t.none", `vm: hostagent t.none: no such request "t.none@lab" (is the hostagent older than this lab? lab down; lab up)`, false},
	}
	for _, tt := range callErrors {
		err := c.Call(ctx, tt.name, nil, nil)
		if err == nil || err.Error() != tt.want || errors.Is(err, ErrQEMUNotResponding) != tt.notResponding {
			t.Errorf("Call(%s) = %v; want %q (not responding: %v)", tt.name, err, tt.want, tt.notResponding)
		}
	}
	// A stranger's key is refused.
	other := t.TempDir()
	oks, _, _ := generateKeys(other)
	oks.host = a.keys.host
	if _, err := dialAgent(ctx, dir, oks); err == nil {
		t.Error("the endpoint accepted an unknown client key")
	}
}

func TestExitStatus(t *testing.T) {
	if code, err := exitStatus(nil); code != 0 || err != nil {
		t.Errorf("nil = %d, %v", code, err)
	}
	if code, err := exitStatus(errors.New("broken pipe")); code != -1 || err == nil {
		t.Errorf("transport error = %d, %v", code, err)
	}
}

// TestReconnectAgainstFakeGuest: after Client.Reconnect, new sessions run on a new
// guest connection, a session started before keeps running on the old one, and the
// old connection is closed once that session ends.
func TestReconnectAgainstFakeGuest(t *testing.T) {
	ctx, a, c := servedFakeGuest(t, t.TempDir())
	guest := a.guest // the first connection

	connID := func() string {
		t.Helper()
		out, err := c.Output(ctx, "connid")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := connID(); got != "1" {
		t.Fatalf("before reconnect: connection %s, want 1", got)
	}
	// A session running across the reconnect: cat echoes what it is sent.
	pr, pw := io.Pipe()
	var out labtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		code, err := c.Run(ctx, "cat", pr, &out, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		done <- err
	}()
	io.WriteString(pw, "before\n")
	waitFor(t, func() bool { return out.String() == "before\n" })

	if err := c.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := connID(); got != "2" {
		t.Fatalf("after reconnect: connection %s, want 2", got)
	}
	io.WriteString(pw, "after\n")
	waitFor(t, func() bool { return out.String() == "before\nafter\n" })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the session started before the reconnect: %v", err)
	}
	// Its end closes the old connection.
	waitFor(t, func() bool {
		_, _, err := guest.SendRequest("keepalive@openssh.com", true, nil)
		return err != nil
	})
	// A second reconnect with no session on the old connection closes it at once.
	a.mu.Lock()
	second := a.guest
	a.mu.Unlock()
	if err := c.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := second.SendRequest("keepalive@openssh.com", true, nil); err == nil {
		t.Error("an idle replaced connection was left open")
	}
	if got := connID(); got != "3" {
		t.Fatalf("after the second reconnect: connection %s, want 3", got)
	}
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}

// servedFakeGuest is a ready agent (as after the boot) kept connected to a fake guest
// and serving ha.sock in dir, and a Client connected to it; all end with the test.
func servedFakeGuest(t *testing.T, dir string) (context.Context, *agent, *Client) {
	t.Helper()
	ks, addr, port := keyedFakeGuest(t, dir)
	guest, err := dialReady(context.Background(), addr, ks.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close() })
	a := &agent{in: &Instance{Name: "t", StateDir: dir, SSHPort: port}, keys: ks, log: slog.New(slog.DiscardHandler),
		ready: make(chan struct{}), guest: guest, health: Health{Phase: "ready", VsockOK: true}, reg: newRegistry()}
	close(a.ready)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := a.serve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := Connect(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, a, c
}

// keyedFakeGuest makes an instance's keys in dir and a fake guest that takes them: the keys,
// the guest's address and its port.
func keyedFakeGuest(t *testing.T, dir string) (*keys, string, int) {
	t.Helper()
	ks, _, err := generateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	addr := fakeGuest(t, ks.host, ks.client.PublicKey())
	_, portText, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	return ks, addr, port
}
