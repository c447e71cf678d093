package host

import (
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// output collects a stream; waitFor blocks until it contains a string or ends.
type output struct {
	mu   sync.Mutex
	cond sync.Cond
	buf  strings.Builder
	done bool
}

func collect(r io.Reader) *output {
	o := &output{}
	o.cond.L = &o.mu
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			o.mu.Lock()
			o.buf.Write(b[:n])
			if err != nil {
				o.done = true
			}
			o.cond.Broadcast()
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *output) waitFor(s string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for !strings.Contains(o.buf.String(), s) && !o.done {
		o.cond.Wait()
	}
	return o.buf.String(), strings.Contains(o.buf.String(), s)
}

func (o *output) all() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for !o.done {
		o.cond.Wait()
	}
	return o.buf.String()
}

// run starts a process and collects its outputs.
func run(t *testing.T, tty *WinSize, drain time.Duration, name string, args ...string) (*process, *output, *output) {
	t.Helper()
	cmd := exec.Command(name, args...)
	p, err := startProcess(cmd, tty, drain, newReaper())
	if err != nil {
		t.Fatal(err)
	}
	go p.afterExit()
	stdout := collect(p.output(p.stdout))
	stderr := collect(strings.NewReader(""))
	if p.stderr != nil {
		stderr = collect(p.output(p.stderr))
	}
	return p, stdout, stderr
}

func TestProcessExitStatus(t *testing.T) {
	tests := []struct {
		script string
		want   ExitStatus
	}{
		{"exit 0", ExitStatus{Code: 0}},
		{"exit 7", ExitStatus{Code: 7}},
		{"exit 255", ExitStatus{Code: 255}},
		{"kill -TERM $$", ExitStatus{Signal: syscall.SIGTERM}},
	}
	for _, tt := range tests {
		p, stdout, _ := run(t, nil, time.Second, "/bin/sh", "-c", tt.script)
		stdout.all()
		if got := p.reap(); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.script, got, tt.want)
		}
	}
	if got := (ExitStatus{Signal: syscall.SIGKILL}).ShellCode(); got != 137 {
		t.Errorf("ShellCode of SIGKILL = %d", got)
	}
}

func TestProcessPipes(t *testing.T) {
	p, stdout, stderr := run(t, nil, time.Second, "/bin/sh", "-c", "cat; echo err >&2")
	io.WriteString(p.stdin, "hello\n")
	p.closeStdin()
	o, e := stdout.all(), stderr.all()
	if o != "hello\n" || e != "err\n" {
		t.Errorf("stdout %q stderr %q", o, e)
	}
	if st := p.reap(); st.Code != 0 {
		t.Errorf("status %v", st)
	}
}

func TestProcessGroupKill(t *testing.T) {
	// The shell starts a child that would outlive it; killing the group kills both.
	p, stdout, _ := run(t, nil, time.Second, "/bin/sh", "-c", "sleep 600 & echo $!; wait")
	line, _ := stdout.waitFor("\n")
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child pid %q", line)
	}
	p.kill()
	stdout.all()
	if st := p.reap(); st.Signal != syscall.SIGKILL {
		t.Errorf("status %v, want SIGKILL", st)
	}
	for i := 0; i < 100; i++ {
		if syscall.Kill(child, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("child %d of the group survived the group kill", child)
}

func TestProcessDrainBounded(t *testing.T) {
	// A descendant keeps stdout open after the leader exits: reading ends after the drain.
	p, stdout, _ := run(t, nil, 200*time.Millisecond, "/bin/sh", "-c", "echo start; sleep 600 & exit 3")
	o := stdout.all()
	if o != "start\n" {
		t.Errorf("stdout %q", o)
	}
	if st := p.reap(); st.Code != 3 {
		t.Errorf("status %v", st)
	}
	syscall.Kill(-p.pid, syscall.SIGKILL) // the sleep; the test owns this group
}

func TestProcessPTY(t *testing.T) {
	p, stdout, _ := run(t, &WinSize{Rows: 33, Cols: 101}, time.Second, "/bin/sh", "-c", `test -t 0 && test -t 1 && test -t 2 && echo tty; stty size; trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done`)
	if got, ok := stdout.waitFor("ready"); !ok {
		t.Fatalf("output %q", got)
	}
	if err := p.resize(WinSize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(stdout.all(), "\r\n", "\n")
	if !strings.Contains(got, "tty\n33 101\nready\n") || !strings.Contains(got, "40 120") {
		t.Errorf("pty output %q", got)
	}
	if st := p.reap(); st.Code != 0 {
		t.Errorf("status %v", st)
	}
}

func TestProcessPTYDrainBounded(t *testing.T) {
	// A descendant that ignores SIGHUP keeps the terminal open after the leader exits: the
	// master's reads still end (by the hangup, or at the latest by the drain deadline, which
	// needs a non-blocking master).
	p, stdout, _ := run(t, &WinSize{Rows: 24, Cols: 80}, 200*time.Millisecond, "/bin/sh", "-c", "echo start; (trap '' HUP; exec sleep 600) & exit 4")
	o := stdout.all()
	if !strings.Contains(o, "start") {
		t.Errorf("output %q", o)
	}
	if st := p.reap(); st.Code != 4 {
		t.Errorf("status %v", st)
	}
	syscall.Kill(-p.pid, syscall.SIGKILL) // the sleep; the test owns this group
}

func TestProcessDrainIsIdleTime(t *testing.T) {
	// A descendant goes on writing after the leader exited, a line every 0.3 s for longer
	// than the drain: the drain bounds the time with nothing to read, not the time since the
	// exit, so every line arrives; then the pipe stays idle and the read ends.
	p, stdout, _ := run(t, nil, time.Second, "/bin/sh", "-c", "(for i in 1 2 3 4 5 6 7 8; do sleep 0.3; echo $i; done; exec sleep 600) & exit 5")
	if o := stdout.all(); o != "1\n2\n3\n4\n5\n6\n7\n8\n" {
		t.Errorf("stdout %q", o)
	}
	if st := p.reap(); st.Code != 5 {
		t.Errorf("status %v", st)
	}
	syscall.Kill(-p.pid, syscall.SIGKILL) // the sleep; the test owns this group
}
