package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/trace"
	"lab/wire"
)

// The interpreter's own step names are lab/trace's, which lab trace merges and reports by.
func TestTraceStepNames(t *testing.T) {
	for _, p := range [][2]string{
		{sideGuest, trace.SideGuest}, {stepArgv, trace.StepArgv}, {stepBinfmt, trace.StepBinfmt},
		{stepConfig, trace.StepConfig}, {stepFile, trace.StepFile}, {stepEnv, trace.StepEnv},
		{stepConnect, trace.StepConnect}, {stepSend, trace.StepSend}, {stepResult, trace.StepResult},
		{stepRetry, trace.StepRetry}, {stepSignal, trace.StepSignal}, {stepStream, trace.StepStream},
		{stepExit, trace.StepExit}, {stepError, trace.StepError},
	} {
		if p[0] != p[1] {
			t.Errorf("guest step %q, lab/trace's %q", p[0], p[1])
		}
	}
}

// sameAsJSON checks that line, the interpreter's encoding of e, decodes as lab/trace.Event
// to what encoding/json's encoding of the same event decodes to.
func sameAsJSON(t *testing.T, line []byte, e traceEvent) {
	t.Helper()
	if !json.Valid(line) {
		t.Fatalf("not JSON: %s", line)
	}
	ref, err := json.Marshal(trace.Event{Trace: e.Trace, Side: e.Side, Step: e.Step, Mono: e.Mono, Wall: e.Wall, PID: e.PID, Text: e.Text, Data: e.Data})
	if err != nil {
		t.Fatal(err)
	}
	var got, want trace.Event
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("decode %s: %v", line, err)
	}
	if err := json.Unmarshal(ref, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n %+v\nwant (encoding/json's)\n %+v\nline %s\nref  %s", got, want, line, ref)
	}
}

// Every record the interpreter makes decodes as encoding/json's encoding of it would.
func TestTraceRecordsDecodeAsJSON(t *testing.T) {
	var out bytes.Buffer
	var evs []traceEvent
	tr := &guestTrace{sink: &traceSink{w: &out, pid: 42, tee: func(e traceEvent) { evs = append(evs, e) }}, id: "0123456789abcdef"}

	sock := filepath.Join(t.TempDir(), "r.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := Dial(context.Background(), "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	tr.argv([]string{"/usr/local/lib/lab/interop", "/mnt/c/a.exe", "a.exe", "x<&>\"\n\x01\xff\u2028"})
	tr.binfmt([]string{"/usr/local/lib/lab/interop", "/nonexistent", "a"})
	tr.config("/etc/lab/interop.conf", &Config{Relay: "vsock:2:1024", TokenFile: "/etc/lab/token", ConnectTimeout: 30 * time.Second,
		Shares: []Share{{GuestPath: "/mnt/c", HostPath: "/srv/c", Drive: "C:"}}})
	tr.launch(&wire.Launch{Format: "pe", Path: "/mnt/c/a.exe", Argv: []string{"a.exe", "x"}, Cwd: "/mnt/c", Flags: wire.LaunchTTY,
		Env: []wire.EnvVar{{Name: "LABENV", Value: "P/p:U"}, {Name: "P", Value: "/mnt/c", Flags: wire.EnvPath}, {Name: "U", Flags: wire.EnvUnset}}})
	tr.launch(&wire.Launch{Format: wire.FormatHost, Path: "true"})
	tr.connected(conn, "unix:"+sock, 1500*time.Microsecond)
	hello := wire.NewHello([]byte("token"))
	tr.sentHandshake(tr.now(), hello, &wire.Launch{Format: "pe", Path: "/x"})
	tr.relayHello(&wire.Hello{Major: 2, Minor: 1})
	tr.result(&wire.LaunchResult{})
	tr.result(&wire.LaunchResult{Errno: wire.EAGAIN, Message: "busy"})
	tr.retry(2, &wire.LaunchResult{Errno: wire.EAGAIN, Message: "busy"}, 15*time.Millisecond)
	tr.stream("stdout", 6, nil)
	tr.stream("stdin", 0, errors.New("boom"))
	tr.signal(syscall.SIGINT)
	tr.exit(&wire.Exit{Code: 3})
	tr.exit(&wire.Exit{Signal: 9})
	tr.failed(126, "lab-interop: it failed\n")
	// The binfmt step's rules, which the test machine may not have.
	tr.record(stepBinfmt, "rules", map[string]any{"rules": []binfmtRule{
		{Name: "WSLInterop", Enabled: true, Interpreter: "/i", Flags: "PF", Magic: "4d5a"},
		{Name: "ext", Interpreter: "/i", Offset: 3, Mask: "ff", Extension: "exe"},
	}, "dir": binfmtDir})
	tr.record(stepBinfmt, "none", map[string]any{"rules": []binfmtRule{}})

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(evs) || len(evs) < 20 {
		t.Fatalf("%d lines for %d events", len(lines), len(evs))
	}
	for i, e := range evs {
		sameAsJSON(t, []byte(lines[i]), e)
	}
	got, bad, err := trace.Parse(&out)
	if err != nil || bad != 0 || len(got) != len(evs) {
		t.Fatalf("trace.Parse: %d events, %d bad, %v", len(got), bad, err)
	}
}

// FuzzTraceEncoding: any strings and numbers in a record decode as encoding/json's
// encoding of them would.
func FuzzTraceEncoding(f *testing.F) {
	f.Add("plain", "k", int64(1), uint32(0))
	f.Add("<&>\"\\\n\r\t\x00\x1f\x7f", "\xff\xfe", int64(-1), uint32(1<<31))
	f.Add("\u2028\u2029é漢🙂", "", int64(1<<62), uint32(7))
	f.Fuzz(func(t *testing.T, s, k string, n int64, u uint32) {
		e := traceEvent{Trace: s, Side: sideGuest, Step: k, Mono: n, Wall: time.Unix(0, n%(1<<60)).UTC(), PID: int(u), Text: s + k,
			Data: map[string]any{k: s, "argv": []string{s, k}, "n": n, "u": u, "b": n%2 == 0, "u8": uint8(u), "u16": uint16(u),
				"m": []map[string]string{{k: s}}, "a": []map[string]any{{"x": s, k: n}},
				"rules": []binfmtRule{{Name: s, Interpreter: k, Flags: s, Offset: int(n % 1000), Magic: k, Mask: s}}}}
		sameAsJSON(t, appendEvent(nil, e), e)
	})
}
