package vm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

// followEvents' verdict for what the hostagent wrote to the pipe, read a byte at a
// time so that every line arrives in pieces.
func TestFollowEvents(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // "" = ready (nil)
	}{
		{"ready", `{"phase":"starting"}` + "\n" + `{"phase":"qemu","msg":"QEMU pid 7"}` + "\n" + `{"phase":"ready"}` + "\n", ""},
		{"ready without a newline", `{"phase":"ready"}`, ""},
		{"verdict ends the read", `{"phase":"ready"}` + "\n" + `{"phase":"failed","error":"later"}` + "\n", ""},
		{"failed", `{"phase":"starting"}` + "\n" + `{"phase":"failed","error":"vm: QEMU exited before SSH was ready: exit status 1"}` + "\n",
			"vm: QEMU exited before SSH was ready: exit status 1"},
		{"failed without text", `{"phase":"failed"}` + "\n", "vm: the hostagent stopped during boot"},
		{"exited", `{"phase":"exited"}` + "\n", "vm: the hostagent stopped during boot"},
		{"garbage skipped", "not json\n{\"phase\":\n\n" + `{"phase":"ready"}` + "\n", ""},
		{"EOF after progress", `{"phase":"starting"}` + "\n" + `{"phase":"qemu"}` + "\n",
			"vm: the hostagent's events ended without ready or failed"},
		{"EOF in a line", `{"phase":"starting"}` + "\n" + `{"phase":"rea`,
			"vm: the hostagent's events ended without ready or failed"},
		{"empty", "", "vm: the hostagent's events ended without ready or failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := followEvents(iotest.OneByteReader(strings.NewReader(tt.in)))
			if got := errText(err); got != tt.want {
				t.Errorf("followEvents = %q, want %q", got, tt.want)
			}
			if strings.Contains(tt.name, "EOF") || tt.name == "empty" {
				if !errors.Is(err, errNoVerdict) {
					t.Errorf("followEvents = %v, want errNoVerdict", err)
				}
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func FuzzFollowEvents(f *testing.F) {
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","phase":"ready","msg":"x"}` + "\n"))
	f.Add([]byte("{\"phase\":\n\n{}\n"))
	f.Add([]byte(`{"phase":"failed","error":"vm: \u0000"}` + "\n" + `{"phase"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The verdict does not depend on how the pipe splits the writes.
		whole := errText(followEvents(bytes.NewReader(b)))
		bytewise := errText(followEvents(iotest.OneByteReader(bytes.NewReader(b))))
		if whole != bytewise {
			t.Fatalf("verdict %q read whole, %q read a byte at a time", whole, bytewise)
		}
	})
}

// waitBooted over a real pipe: the verdict, the hostagent's death (EOF), and ctx.
func TestWaitBooted(t *testing.T) {
	exitStatus3 := errors.New("exit status 3")
	tests := []struct {
		name  string
		write string // then the write end is closed, unless hold
		hold  bool
		exit  error // the hostagent's exit, sent after EOF
		ctx   func() context.Context
		want  string
	}{
		{name: "ready", write: `{"phase":"starting"}` + "\n" + `{"phase":"ready"}` + "\n"},
		{name: "failed", write: `{"phase":"failed","error":"vm: the guest did not answer SSH within 2m0s"}` + "\n",
			want: "vm: the guest did not answer SSH within 2m0s"},
		{name: "died", write: `{"phase":"starting"}` + "\n", exit: exitStatus3,
			want: "vm: the hostagent exited during boot (exit status 3); it said:\n  level=ERROR msg=boom\n  panic: x"},
		{name: "interrupted", write: `{"phase":"starting"}` + "\n", hold: true,
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			want: "vm: boot interrupted: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileAgentLog), []byte("level=ERROR msg=boom\npanic: x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := io.WriteString(w, tt.write); err != nil {
				t.Fatal(err)
			}
			if !tt.hold {
				w.Close()
			}
			exit := make(chan error, 1)
			if tt.exit != nil {
				exit <- tt.exit
			}
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			var prog bytes.Buffer
			in := &Instance{Name: "t", StateDir: dir, Accel: "tcg", Vsock: "user"}
			err = waitBooted(ctx, Config{Progress: &prog}, in, r, exit)
			if got := errText(err); got != tt.want {
				t.Errorf("waitBooted = %q, want %q", got, tt.want)
			}
			if tt.want == "" && !strings.Contains(prog.String(), "lab: t is ready") {
				t.Errorf("progress = %q, want the ready line", prog.String())
			}
		})
	}
}

// emit writes each event to events.jsonl and to Up's pipe, and closes the pipe at the
// verdict.
func TestEmitToPipe(t *testing.T) {
	dir := t.TempDir()
	ev, err := os.Create(filepath.Join(dir, FileEvents))
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := &agent{events: ev, pipe: w, log: slog.New(slog.DiscardHandler)}
	a.emit("starting", "hostagent pid 1", nil)
	a.emit("failed", "", errors.New("vm: no"))
	a.emit("exited", "", nil) // after the verdict: events.jsonl only
	got, err := io.ReadAll(r) // returns at EOF: emit closed the pipe
	if err != nil {
		t.Fatal(err)
	}
	logged, _ := os.ReadFile(ev.Name())
	lines := strings.Split(strings.TrimSuffix(string(logged), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("events.jsonl = %q, want 3 lines", logged)
	}
	if want := lines[0] + "\n" + lines[1] + "\n"; string(got) != want {
		t.Errorf("pipe = %q, want %q", got, want)
	}
	if err := followEvents(bytes.NewReader(got)); errText(err) != "vm: no" {
		t.Errorf("verdict = %v, want vm: no", err)
	}
}

// A hostagent process takes the pipe Up names in EnvEventsFD, and nothing else.
func TestInheritedEventPipe(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Dup(int(w.Fd())) // as a child's fd 3: its own descriptor
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvEventsFD, strconv.Itoa(fd))
	p := inheritedEventPipe(log)
	if p == nil {
		t.Fatal("the pipe was not taken")
	}
	if _, ok := os.LookupEnv(EnvEventsFD); ok {
		t.Error(EnvEventsFD + " is still set: QEMU and the Tasks' children would see it")
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd flags = %#x, %v; want close-on-exec", flags, err)
	}
	io.WriteString(p, "x\n")
	p.Close()
	if got, _ := io.ReadAll(r); string(got) != "x\n" {
		t.Errorf("read %q through the pipe", got)
	}

	reg, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, v := range []string{strconv.Itoa(int(reg.Fd())), "1", "x", "999999"} {
		t.Setenv(EnvEventsFD, v)
		if p := inheritedEventPipe(log); p != nil {
			t.Errorf("%s=%s (not a pipe) was taken", EnvEventsFD, v)
		}
	}
}

// startAgent hands a real process the pipe as fd 3, named by EnvEventsFD; its verdict
// or its death ends waitBooted.
func TestStartAgentPipe(t *testing.T) {
	tests := []struct{ name, script, want string }{
		{"ready", `[ "$` + EnvEventsFD + `" = 3 ] && echo '{"phase":"ready"}' >&3; sleep 1`, ""},
		{"died", `echo '{"phase":"starting"}' >&3; echo dying; exit 3`,
			"vm: the hostagent exited during boot (exit status 3); it said:\n  dying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			pid, exit, err := startAgent([]string{"/bin/sh", "-c", tt.script, "sh"}, dir, w)
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			in := &Instance{Name: "t", StateDir: dir, Accel: "tcg", Vsock: "user"}
			err = waitBooted(context.Background(), Config{}, in, r, exit)
			if got := errText(err); got != tt.want {
				t.Errorf("waitBooted = %q, want %q", got, tt.want)
			}
			unix.Kill(pid, unix.SIGKILL) // startAgent's goroutine reaps it
		})
	}
}
