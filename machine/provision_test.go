package machine

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lab/guest"
	"lab/provision"
	"lab/wire"
)

// The config provisioning writes must be the one the interpreter reads.
func TestInteropConfParsesInGuest(t *testing.T) {
	s := provision.Settings{
		RelayAddr: RelayAddr,
		TokenPath: provision.TokenPath,
		Shares: []provision.Share{
			{Tag: "share0", HostPath: "/home/me/work", GuestPath: "/mnt/lab"},
			{Tag: "share1", HostPath: "/home/me/My Files", GuestPath: "/mnt/my files"},
		},
	}
	b, err := InteropConf(s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := guest.ParseConfig(bytes.NewReader(b), "interop.conf")
	if err != nil {
		t.Fatalf("guest.ParseConfig: %v\n%s", err, b)
	}
	if c.Relay != RelayAddr || c.TokenFile != provision.TokenPath || len(c.Shares) != 2 {
		t.Fatalf("parsed %+v from\n%s", c, b)
	}
	if c.Shares[1].GuestPath != "/mnt/my files" || c.Shares[1].HostPath != "/home/me/My Files" {
		t.Errorf("share with spaces: %+v", c.Shares[1])
	}
}

func TestStubParsesInWire(t *testing.T) {
	name, err := wire.ParseStub(Stub(provision.Exposed{Name: "notify-send"}))
	if err != nil || name != "notify-send" {
		t.Errorf("ParseStub = %q, %v", name, err)
	}
	if _, err := wire.ParseStub(Stub(provision.Exposed{Name: "../x"})); err == nil {
		t.Error("a stub for an invalid name parsed")
	}
}

func TestRulesMatchGuest(t *testing.T) {
	for _, wslNames := range []bool{true, false} {
		want, err := guest.BinfmtRules(provision.InterpreterPath, wslNames)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range Rules(wslNames) {
			// Same rule; flag order differs only in spelling (WSL writes FP).
			got := r.String()
			if got[:len(got)-2] != want[i][:len(want[i])-2] {
				t.Errorf("rule %d: %q, guest package says %q", i, got, want[i])
			}
		}
	}
	if got := Rules(true)[0].String(); got != ":WSLInterop:M::MZ::/usr/local/lib/lab/interop:POF" {
		t.Errorf("default pe rule %q, want WSL's string with lab's interpreter", got)
	}
}

// TestChanListenerNoParking: a connection nobody accepts is closed after the hand-over
// deadline instead of waiting (with its goroutine) for as long as the generation lives.
func TestChanListenerNoParking(t *testing.T) {
	l := newChanListener(&net.UnixAddr{Name: "x", Net: "unix"})
	l.wait = 10 * time.Millisecond
	a, b := net.Pipe()
	defer b.Close()
	if !l.deliver(a) { // returns: nobody accepted
		t.Error("deliver: false for an open listener")
	}
	if _, err := a.Write([]byte("a")); err == nil {
		t.Error("a connection nobody accepted is still open")
	}
}

func TestChanListener(t *testing.T) {
	l := newChanListener(&net.UnixAddr{Name: "x", Net: "unix"})
	a, b := net.Pipe()
	defer b.Close()
	go l.deliver(a)
	c, err := l.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept = %v, %v", c, err)
	}
	l.Close()
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
	x, y := net.Pipe()
	defer y.Close()
	var cur atomic.Pointer[chanListener]
	cur.Store(l)
	handOver(&cur, x) // closed listener, no newer one: the connection is closed, not leaked
	if _, err := x.Write([]byte("a")); err == nil {
		t.Error("connection delivered to a closed listener is still open")
	}
}

// TestHandOverNewGeneration: a connection on its way to a generation that lab expose
// replaces reaches the new generation, instead of being closed unanswered.
func TestHandOverNewGeneration(t *testing.T) {
	addr := &net.UnixAddr{Name: "x", Net: "unix"}
	old, next := newChanListener(addr), newChanListener(addr)
	var cur atomic.Pointer[chanListener]
	cur.Store(old)
	a, b := net.Pipe()
	defer b.Close()
	done := make(chan struct{})
	go func() { handOver(&cur, a); close(done) }()
	time.Sleep(20 * time.Millisecond) // let it wait on the old generation (either order works)
	cur.Store(next)
	old.Close()
	c, err := next.Accept()
	if err != nil || c != a {
		t.Fatalf("new generation's Accept = %v, %v; want the connection", c, err)
	}
	<-done
}

// TestWSLNamesSticky: --no-wsl-names is kept for later provisioning until --wsl-names.
func TestWSLNamesSticky(t *testing.T) {
	dir := t.TempDir()
	for _, step := range []struct {
		opts ProvisionOptions
		want bool
	}{
		{ProvisionOptions{}, true},
		{ProvisionOptions{NoWSLNames: true}, false},
		{ProvisionOptions{}, false}, // lab expose, lab provision: the choice is kept
		{ProvisionOptions{WSLNames: true}, true},
		{ProvisionOptions{}, true},
	} {
		got, err := wslNames(dir, step.opts)
		if err != nil || got != step.want {
			t.Fatalf("wslNames(%+v) = %v, %v; want %v", step.opts, got, err, step.want)
		}
	}
	if _, err := wslNames(dir, ProvisionOptions{WSLNames: true, NoWSLNames: true}); err == nil {
		t.Error("both switches accepted")
	}
}

func TestInteropConfCwdWarning(t *testing.T) {
	for _, on := range []bool{false, true} {
		b, err := InteropConf(provision.Settings{RelayAddr: RelayAddr, TokenPath: provision.TokenPath, CwdWarning: on})
		if err != nil {
			t.Fatal(err)
		}
		c, err := guest.ParseConfig(bytes.NewReader(b), "rendered")
		if err != nil || c.CwdWarning != on {
			t.Errorf("cwd warning %v: rendered %q parses to %+v, %v", on, b, c, err)
		}
	}
}

func TestReadEnvAllow(t *testing.T) {
	p := filepath.Join(t.TempDir(), FileEnvAllow)
	if got, err := readEnvAllow(p); err != nil || got != nil {
		t.Errorf("missing file: %q, %v", got, err)
	}
	os.WriteFile(p, []byte("# trusted by the host owner\nPATH\n  GIT_AUTHOR_*  # names for commits\n\n"), 0o600)
	if got, err := readEnvAllow(p); err != nil || !reflect.DeepEqual(got, []string{"PATH", "GIT_AUTHOR_*"}) {
		t.Errorf("readEnvAllow = %q, %v", got, err)
	}
}

// TestLogRing: the relay's log records come back structured (attributes from With and
// groups flattened), filtered by time, the oldest dropped past the ring's size, while
// every record still reaches the file's handler.
func TestLogRing(t *testing.T) {
	var file bytes.Buffer
	ring := newLogRing(slog.NewTextHandler(&file, nil), 3)
	log := slog.New(ring)
	t0 := time.Now()
	log.Info("relay: serving", "generation", 1)
	log.With("session", 7).WithGroup("req").Info("launch", "name", "host-echo", "argv", "a b")
	t1 := time.Now()
	log.Warn("refused", "err", "bad token")
	log.Info("fourth")

	got := ring.since(t1)
	want := []LogRecord{
		{Level: "WARN", Msg: "refused", Attrs: []LogAttr{{"err", "bad token"}}},
		{Level: "INFO", Msg: "fourth"},
	}
	for i := range got {
		got[i].Time = time.Time{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("since(t1) = %+v; want %+v", got, want)
	}
	all := ring.since(t0)
	if len(all) != 3 || all[0].Msg != "launch" {
		t.Fatalf("since(t0) = %+v; want the last 3, from launch", all)
	}
	wantAttrs := []LogAttr{{"session", "7"}, {"req.name", "host-echo"}, {"req.argv", "a b"}}
	if !reflect.DeepEqual(all[0].Attrs, wantAttrs) {
		t.Errorf("attrs = %+v; want %+v", all[0].Attrs, wantAttrs)
	}
	line := all[0].String()
	if !strings.HasSuffix(line, ` level=INFO msg=launch session=7 req.name=host-echo req.argv="a b"`) {
		t.Errorf("String() = %q", line)
	}
	if n := strings.Count(file.String(), "\n"); n != 4 {
		t.Errorf("the file handler got %d lines; want 4:\n%s", n, file.String())
	}
}
