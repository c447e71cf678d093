package vm

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const marker = "Server listening on "

// appendTo appends s to the file at path, as QEMU's file chardev does.
func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// TestConsoleSays: the watch sees the marker whether it was written before the watch,
// in one write, or split across writes with other text between the watch's reads, and
// not text that only resembles it.
func TestConsoleSays(t *testing.T) {
	tests := []struct {
		name   string
		before string   // in the file when the watch starts
		writes []string // appended after, one write each
		want   bool
	}{
		{"already there", "lab: rcS done\nServer listening on 0.0.0.0 port 22.\n", nil, true},
		{"one write", "Linux version 6.1\n", []string{"lab: rcS done\n", "Server listening on 0.0.0.0 port 22.\n"}, true},
		{"split across writes", "", []string{"lab: rcS done\nServer li", "sten", "ing on 0.0.0.0 port 22.\n"}, true},
		{"after much text", "", []string{string(make([]byte, 100<<10)), "x Server listening on :: port 22.\n"}, true},
		{"never said", "lab: rcS done\n", []string{"Server listening\n", "on 0.0.0.0\n", "Server: listening on\n"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			if err := os.WriteFile(path, []byte(tt.before), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			said, err := consoleSays(ctx, path, marker)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				appendTo(t, path, w)
			}
			if tt.want {
				if !closedWithin(said, 10*time.Second) {
					t.Fatal("the marker was written but the watch did not see it")
				}
				return
			}
			// Nothing more will be written: the watch has read it all once it waits.
			if closedWithin(said, 200*time.Millisecond) {
				t.Fatal("the watch fired on text without the marker")
			}
		})
	}
}

func TestConsoleSaysErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := consoleSays(context.Background(), filepath.Join(dir, "none.log"), marker); err == nil {
		t.Error("a watch on a missing file: no error")
	}
	if _, err := consoleSays(context.Background(), filepath.Join(dir, "none.log"), ""); err == nil || err.Error() != "vm: empty console marker" {
		t.Errorf("an empty marker: %v", err)
	}
}

// countingGuest is fakeGuest behind a listener that records, per accepted connection,
// whether the console had said sshd listens by then.
type countingGuest struct {
	mu    sync.Mutex
	said  bool
	early int // connections accepted before the console said so
	late  int
}

func (g *countingGuest) setSaid() { g.mu.Lock(); g.said = true; g.mu.Unlock() }

func (g *countingGuest) counts() (early, late int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.early, g.late
}

// proxy forwards connections to the fake guest at addr, counting them.
func (g *countingGuest) proxy(t *testing.T, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			if g.said {
				g.late++
			} else {
				g.early++
			}
			g.mu.Unlock()
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { defer up.Close(); io.Copy(up, c) }()
			go func() { defer c.Close(); io.Copy(c, up) }()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWaitReadyDialsWhenConsoleSays: a guest that says on its console when sshd
// listens is not dialled before it says so (every early connection would be completed
// by slirp later, an sshd fork during the boot), and is dialled once it does.
func TestWaitReadyDialsWhenConsoleSays(t *testing.T) {
	dir := t.TempDir()
	ks, _, err := generateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	var g countingGuest
	port := g.proxy(t, fakeGuest(t, ks.host, ks.client.PublicKey()))
	console := filepath.Join(dir, FileConsoleLog)
	if err := os.WriteFile(console, []byte("Linux version 6.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{in: &Instance{Name: "t", StateDir: dir, SSHPort: port, BootTimeout: Duration(time.Minute), ConsoleReady: marker},
		keys: ks, log: slog.New(slog.DiscardHandler), ready: make(chan struct{}), reg: newRegistry(),
		consoleFallback: time.Hour} // no fallback dial in this test
	done := make(chan error, 1)
	go func() { done <- a.waitReady(context.Background()) }()
	// A polling waitReady dials at once; give it the chance to.
	time.Sleep(300 * time.Millisecond)
	appendTo(t, console, "lab: rcS done\n")
	select {
	case err := <-done:
		t.Fatalf("ready before the console said sshd listens: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.setSaid()
	appendTo(t, console, "Server listening on 0.0.0.0 port 22.\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("not ready 30 s after the console said sshd listens")
	}
	if early, late := g.counts(); early != 0 || late != 1 {
		t.Errorf("connections before the console said sshd listens: %d, after: %d; want 0 and 1", early, late)
	}
	a.mu.Lock()
	c := a.guest
	a.mu.Unlock()
	if c == nil {
		t.Fatal("no kept guest connection")
	}
	if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Errorf("the kept connection: %v", err)
	}
	c.Close()
}

// TestWaitReadyConsoleFallback: a guest whose console never says (a garbled line) is
// still found by the fallback dials.
func TestWaitReadyConsoleFallback(t *testing.T) {
	dir := t.TempDir()
	ks, _, port := keyedFakeGuest(t, dir)
	if err := os.WriteFile(filepath.Join(dir, FileConsoleLog), []byte("Server lis[ 1.2] x\ntening on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{in: &Instance{Name: "t", StateDir: dir, SSHPort: port, BootTimeout: Duration(time.Minute), ConsoleReady: marker},
		keys: ks, log: slog.New(slog.DiscardHandler), ready: make(chan struct{}), reg: newRegistry(),
		consoleFallback: 10 * time.Millisecond}
	if err := a.waitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.guest.Close()
}
