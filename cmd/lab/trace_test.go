package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"lab/host"
	"lab/trace"
	"lab/wire"
)

// localGuest runs lab trace's shell lines on this machine, standing in for the VM's SSH
// connection; everything else is real: the lab-interop binary (started as binfmt_misc
// with flag P starts it), a relay on a Unix socket, the trace files.
type localGuest struct {
	env []string
	dir string
}

func (g localGuest) Run(ctx context.Context, line string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	c.Env = append(os.Environ(), g.env...)
	c.Dir = g.dir
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func (g localGuest) Output(ctx context.Context, line string) ([]byte, error) {
	var out bytes.Buffer
	code, err := g.Run(ctx, line, nil, &out, io.Discard)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d", code)
	}
	return out.Bytes(), err
}

type traceWorld struct {
	interp, stub, relayTrace string
	guest                    localGuest
}

func newTraceWorld(t *testing.T) traceWorld {
	t.Helper()
	dir := t.TempDir()
	interp := filepath.Join(dir, "interop")
	c := exec.Command("go", "build", "-o", interp, "../lab-interop")
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("go build lab-interop: %v\n%s", err, out)
	}
	printf, err := exec.LookPath("printf")
	if err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(dir, "share")
	os.Mkdir(share, 0o755)
	stubText, _ := wire.FormatStub("hostprintf")
	stub := filepath.Join(share, "hostprintf")
	if err := os.WriteFile(stub, stubText, 0o755); err != nil {
		t.Fatal(err)
	}
	token := []byte("0123456789abcdef0123456789abcdef")
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, token, 0o600)
	sock := filepath.Join(dir, "relay.sock")
	relayTrace := filepath.Join(dir, "relay-trace.jsonl")
	tf, err := trace.OpenFile(relayTrace, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tf.Close() })
	r, err := host.NewRelay(host.Config{
		Token: token, Shares: []host.Share{{HostPath: share, GuestPath: share}},
		Allow: []host.Exposed{{Name: "hostprintf", HostPath: printf}}, FallbackDir: dir,
		Env: []string{"PATH=/usr/bin:/bin"}, Trace: trace.NewSink(tf, trace.SideRelay),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := host.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	conf := filepath.Join(dir, "interop.conf")
	text := fmt.Sprintf("relay = %s\ntoken_file = %s\nshare = %s %s\n", strconv.Quote("unix:"+sock), strconv.Quote(tokenFile), strconv.Quote(share), strconv.Quote(share))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return traceWorld{interp: interp, stub: stub, relayTrace: relayTrace,
		guest: localGuest{dir: share, env: []string{"LAB_INTEROP_CONFIG=" + conf, "LABENV=GREETING:NOPE/u", "GREETING=hello", "NOPE=x"}}}
}

// lab trace around one launch of an exposed host command, with the real interpreter and
// relay: the command's output and status pass through, and each step is in the report.
func TestTraceLaunch(t *testing.T) {
	w := newTraceWorld(t)
	// As binfmt_misc with flag P runs the interpreter: interp FILE ARGV0 ARGS...
	args := []string{w.interp, w.stub, "hostprintf", "%s|", "a", "b c"}
	var out, errb bytes.Buffer
	o := traceOptions{name: "test", vsock: "user", relayTrace: w.relayTrace}
	if err := traceAction(context.Background(), w.guest, args, o, nil, &out, &errb); err != nil {
		t.Fatalf("lab trace: %v\nstderr: %s", err, errb.String())
	}
	got := out.String()
	report, ok := strings.CutPrefix(got, "a|b c|")
	if !ok {
		t.Fatalf("the command's output does not come first:\n%s", got)
	}
	t.Logf("report:\n%s", report)
	for _, want := range []string{
		`(?m)^launch 1, trace [0-9a-f]{16}: relay times placed on the guest's clock by the handshake round trip \(±[0-9.]+ ms\)$`,
		`(?m)^ +[0-9]+\.[0-9]{3} ms  guest  interpreter argv  \[".*/interop" ".*/share/hostprintf" "hostprintf" "%s\|" "a" "b c"\]  \(flag P: argv\[1\] ".*/share/hostprintf" is the file execve was given, argv\[2\] "hostprintf" the caller's argv\[0\]\)$`,
		`(?m)^ +[0-9.]+ ms  guest  binfmt            no enabled rule in /proc/sys/fs/binfmt_misc matches .* \(started by hand\?\)$`,
		`(?m)^ +[0-9.]+ ms  guest  config            .*/interop.conf: relay unix:.*/relay.sock, token .*/token, shares \[.*/share = host .*/share\]$`,
		`(?m)^ +[0-9.]+ ms  guest  file              format host \(a stub\): asks for the exposed command "hostprintf"`,
		`(?m)^ +[0-9.]+ ms  guest  env               LABENV="GREETING:NOPE/u" sends GREETING="hello"$`,
		`(?m)^ +[0-9.]+ ms  guest  connect           unix .* -> .*/relay.sock \(relay unix:.*\) in [0-9.]+ ms$`,
		`(?m)^ +[0-9.]+ ms  guest  hello\+launch      Hello [0-9]+ B \(protocol VERSION, token 32 B\) \+ Launch [0-9]+ B \(trace id [0-9a-f]{16}\), one write$`,
		`(?m)^ +[0-9.]+ ms  relay  accept            connection from unix`,
		`(?m)^ +[0-9.]+ ms  relay  hello             guest speaks VERSION; token accepted`,
		`(?m)^ +[0-9.]+ ms  relay  launch            Launch [0-9]+ B: format host, path "hostprintf", 4 args`,
		`(?m)^ +[0-9.]+ ms  relay  decision          exposed command "hostprintf" -> /.*printf \(allow list\), runner exec$`,
		`(?m)^ +[0-9.]+ ms  relay  cwd               guest (/.*/share) -> host (/.*/share)$`,
		`(?m)^ +[0-9.]+ ms  relay  start             host pid [0-9]+ \(own process group\) on pipes: /.*printf \["hostprintf" "%s\|" "a" "b c"\]$`,
		`(?m)^ +[0-9.]+ ms  relay  environment       crossed: LABENV, GREETING="hello"$`,
		`(?m)^ +[0-9.]+ ms  relay  reply             Hello \+ LaunchResult \(started\)`,
		`(?m)^ +[0-9.]+ ms  guest  launch result     relay speaks VERSION; started; [0-9.]+ ms after the send$`,
		`(?m)^ +[0-9.]+ ms  relay  first output      first 6 bytes of stdout read from the program$`,
		`(?m)^ +[0-9.]+ ms  guest  stream            stdout: 6 bytes host -> guest$`,
		`(?m)^ +[0-9.]+ ms  guest  stream            stderr: 0 bytes host -> guest$`,
		`(?m)^ +[0-9.]+ ms  relay  program exited    host pid [0-9]+ exited \(exit status 0\)$`,
		`(?m)^ +[0-9.]+ ms  relay  exit              exit status 0 after [0-9.]+ ms; Exit frame sent after both output EOFs, [0-9.]+ ms after the program exited$`,
		`(?m)^ +[0-9.]+ ms  guest  exit              status 0 \(host exit code 0\)$`,
		`(?m)^command exit status 0\n\z`,
	} {
		want = strings.ReplaceAll(want, "VERSION", fmt.Sprintf(`%d\.%d`, wire.Major, wire.Minor))
		if !regexp.MustCompile(want).MatchString(report) {
			t.Errorf("the report has no line matching %s", want)
		}
	}
	// Causality on the merged clock: the relay's handshake lies inside the guest's (the
	// handshake is what places the relay's times, so this holds exactly). The relay's later
	// steps are in order on its own clock; against the guest's they are placed only within
	// the printed error, so the guest's exit may show a fraction of a millisecond before the
	// relay's.
	for _, order := range [][]string{
		{"guest  hello+launch", "relay  launch", "relay  reply", "guest  launch result", "guest  exit"},
		{"relay  reply", "relay  program exited", "relay  exit"},
	} {
		last := -1
		for _, s := range order {
			i := strings.Index(report, s)
			if i < last {
				t.Errorf("%q comes before the step listed before it in %q", s, order)
			}
			last = i
		}
	}
}

// --json: one document, the command's stdout on stderr, the steps in time order.
func TestTraceJSON(t *testing.T) {
	w := newTraceWorld(t)
	args := []string{w.interp, w.stub, "hostprintf", "x"}
	var out, errb bytes.Buffer
	o := traceOptions{name: "test", vsock: "kernel", relayTrace: w.relayTrace, json: true}
	if err := traceAction(context.Background(), w.guest, args, o, nil, &out, &errb); err != nil {
		t.Fatalf("lab trace: %v\nstderr: %s", err, errb.String())
	}
	if errb.String() != "x" {
		t.Errorf("the command's stdout on stderr = %q; want %q", errb.String(), "x")
	}
	var rep traceReport
	d := json.NewDecoder(&out)
	d.DisallowUnknownFields()
	if err := d.Decode(&rep); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, out.String())
	}
	if !rep.Interop || rep.ExitStatus != 0 || rep.Vsock != "kernel" || len(rep.Launches) != 1 || rep.Launches[0].Method != trace.ClockHandshake {
		t.Fatalf("report: %+v", rep)
	}
	steps := map[string]bool{}
	for i, s := range rep.Steps {
		steps[s.Side+" "+s.Step] = true
		if i > 0 && s.TMS < rep.Steps[i-1].TMS {
			t.Errorf("step %d (%s) at %.3f ms is before step %d at %.3f ms", i, s.Step, s.TMS, i-1, rep.Steps[i-1].TMS)
		}
		if s.Trace != rep.Launches[0].Trace || s.Launch != 1 {
			t.Errorf("step %d belongs to %s/%d", i, s.Trace, s.Launch)
		}
	}
	for _, want := range []string{"guest interpreter argv", "guest binfmt", "guest connect", "relay decision", "relay start", "guest exit"} {
		if !steps[want] {
			t.Errorf("no %q step in %v", want, steps)
		}
	}
	for _, s := range rep.Steps {
		if s.Side == trace.SideRelay && s.Step == trace.StepStart {
			if pid, ok := s.Data["pid"].(float64); !ok || pid <= 0 {
				t.Errorf("relay start has no host pid: %v", s.Data)
			}
		}
	}
}

// A command that runs no foreign file says so, and its status passes through.
func TestTraceNoInterop(t *testing.T) {
	w := newTraceWorld(t)
	var out bytes.Buffer
	o := traceOptions{name: "test", vsock: "user", relayTrace: w.relayTrace}
	err := traceAction(context.Background(), w.guest, []string{"sh", "-c", "echo plain; exit 3"}, o, nil, &out, io.Discard)
	if ee, ok := err.(*exitError); !ok || ee.code != 3 {
		t.Fatalf("err = %v; want exit status 3", err)
	}
	want := "plain\nlab trace: sh -c 'echo plain; exit 3'  (VM test, vsock user: lab's vhost-user device in the hostagent; the guest sees AF_VSOCK either way)\n" +
		"  no interop launch: the command ran no file that a lab binfmt_misc rule hands to the interpreter (or interop is off: lab interop on)\n" +
		"command exit status 3\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
}

// A refused launch: the relay's refusal and the interpreter's error line are both there.
func TestTraceRefused(t *testing.T) {
	w := newTraceWorld(t)
	outside := filepath.Join(t.TempDir(), "x.exe")
	os.WriteFile(outside, []byte("MZ not really"), 0o755)
	var out bytes.Buffer
	o := traceOptions{name: "test", vsock: "user", relayTrace: w.relayTrace}
	err := traceAction(context.Background(), w.guest, []string{w.interp, outside, "x.exe"}, o, nil, &out, io.Discard)
	if ee, ok := err.(*exitError); !ok || ee.code != 126 {
		t.Fatalf("err = %v; want exit status 126", err)
	}
	for _, want := range []string{
		`(?m)^ +[0-9.]+ ms  relay  refused           errno 1 \(operation not permitted\): lab relay: .*/x.exe: not in a shared folder`,
		`(?m)^ +[0-9.]+ ms  relay  reply             Hello \+ LaunchResult \(operation not permitted\)`,
		`(?m)^ +[0-9.]+ ms  guest  error             exit 126: lab-interop: lab relay: .*/x.exe: not in a shared folder`,
		`(?m)^launch 1, trace [0-9a-f]{16}: relay times placed on the guest's clock by the handshake round trip`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("the report has no line matching %s\n%s", want, out.String())
		}
	}
}

// TestRelayEventsFollows: lab trace reads the relay's records as the relay writes them: a
// launch's last record appended (or written to a rotated file) after the reading started is
// seen, and a record that never comes ends the wait with what there is.
func TestRelayEventsFollows(t *testing.T) {
	line := func(step string) []byte {
		b, err := json.Marshal(trace.Event{Trace: "t1", Side: "relay", Step: step, Text: step})
		if err != nil {
			t.Fatal(err)
		}
		return append(b, '\n')
	}
	appendTo := func(path string, b []byte) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		f.Write(b)
		f.Close()
	}
	guestEv := []trace.Event{{Trace: "t1", Side: "guest", Step: trace.StepSend}}
	for _, tc := range []struct {
		name  string
		later func(path string) // what the relay writes after lab trace started reading
		want  []string          // the steps read
	}{
		{"appended", func(path string) { appendTo(path, line(trace.StepExit)) }, []string{trace.StepAccept, trace.StepExit}},
		{"rotated", func(path string) {
			os.Rename(path, path+".1")
			appendTo(path, line(trace.StepLost))
		}, []string{trace.StepAccept, trace.StepLost}},
		{"never", func(string) {}, []string{trace.StepAccept}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "relay-trace.jsonl")
			appendTo(path, line(trace.StepAccept))
			got := make(chan []trace.Event, 1)
			go func() {
				ev, err := relayEvents(context.Background(), path, guestEv)
				if err != nil {
					t.Error(err)
				}
				got <- ev
			}()
			tc.later(path)
			var steps []string
			for _, e := range <-got {
				steps = append(steps, e.Step)
			}
			if fmt.Sprint(steps) != fmt.Sprint(tc.want) {
				t.Errorf("steps read = %v, want %v", steps, tc.want)
			}
		})
	}
}
