package host

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"lab/trace"
	"lab/wire"
)

// sessionTrace records one session's steps for lab trace (Config.Trace) when its Launch
// carries a trace id (protocol 2.1). Until the Launch is read the id is unknown, so the
// accept and Hello times are kept and recorded with it. A nil *sessionTrace, or one whose
// launch had no trace id, records nothing.
type sessionTrace struct {
	sink         *trace.Sink
	id           string
	accept       int64
	acceptWall   time.Time
	peer, local  string
	hello        int64
	helloWall    time.Time
	helloVersion string
	start        time.Time
}

// traceSession starts a session's trace record, or returns nil when the relay has no
// trace sink.
func (r *Relay) traceSession(conn net.Conn) *sessionTrace {
	if r.cfg.Trace == nil {
		return nil
	}
	return &sessionTrace{sink: r.cfg.Trace, accept: trace.Mono(), acceptWall: time.Now(), start: time.Now(),
		peer: addrString(conn.RemoteAddr()), local: addrString(conn.LocalAddr())}
}

func (t *sessionTrace) on() bool { return t != nil && t.id != "" }

func (t *sessionTrace) record(step, text string, data map[string]any) {
	if t.on() {
		t.sink.Record(t.id, step, text, data)
	}
}

// gotHello notes when the guest's Hello was read and its token accepted.
func (t *sessionTrace) gotHello(h *wire.Hello) {
	if t != nil {
		t.hello, t.helloWall = trace.Mono(), time.Now()
		t.helloVersion = fmt.Sprintf("%d.%d", h.Major, h.Minor)
	}
}

// gotLaunch learns the trace id from the Launch and records the steps so far.
func (t *sessionTrace) gotLaunch(req *wire.Launch) {
	if t == nil || req.TraceID == "" {
		return
	}
	now, wall := trace.Mono(), time.Now()
	t.id = req.TraceID
	t.sink.RecordAt(t.accept, t.acceptWall, t.id, trace.StepAccept, fmt.Sprintf("connection from %s on %s", t.peer, t.local),
		map[string]any{"peer": t.peer, "local": t.local})
	if t.hello != 0 {
		t.sink.RecordAt(t.hello, t.helloWall, t.id, trace.StepHello, fmt.Sprintf("guest speaks %s; token accepted (peer checked before reading)", t.helloVersion),
			map[string]any{"guest_version": t.helloVersion})
	}
	b, _ := req.MarshalBinary()
	size := wire.HeaderSize + len(b)
	t.sink.RecordAt(now, wall, t.id, trace.StepLaunch, fmt.Sprintf("Launch %d B: format %s, path %q, %d args, cwd %s", size, req.Format, req.Path, len(req.Argv), req.Cwd),
		map[string]any{"launch_bytes": size, "format": req.Format, "path": req.Path, "argv": req.Argv, "cwd": req.Cwd, "tty": req.Flags&wire.LaunchTTY != 0})
}

// decided records the policy's answer for an authorised launch.
func (t *sessionTrace) decided(c *Config, req *wire.Launch, l launch) {
	if !t.on() {
		return
	}
	runner := "exec"
	if l.Format == FormatPE {
		runner = "wine"
	}
	if l.Format == FormatInterp {
		runner = "interpreter " + strings.Join(l.Interp, " ")
	}
	data := map[string]any{"program": l.Program, "runner": runner, "guest_path": req.Path}
	var text string
	if req.Format == wire.FormatHost {
		data["kind"] = "exposed command"
		text = fmt.Sprintf("exposed command %q -> %s (allow list), runner %s", req.Path, l.Program, runner)
	} else {
		data["kind"] = "share file"
		share := "?"
		if s, _, ok := c.shareFor(req.Path); ok {
			share = s.GuestPath + " = host " + s.HostPath
			data["share"] = map[string]string{"guest": s.GuestPath, "host": s.HostPath}
		}
		text = fmt.Sprintf("share file %s -> %s (share %s), runner %s", req.Path, l.Program, share, runner)
	}
	t.record(trace.StepDecision, text, data)
}

// refusedLaunch records a refusal and, as the reply goes out now, the handshake's end.
func (t *sessionTrace) refusedLaunch(rf *refusal) {
	if !t.on() {
		return
	}
	reason := ""
	if rf.log != nil {
		reason = rf.log.Error()
	}
	t.record(trace.StepRefused, fmt.Sprintf("errno %d (%v): %s", uint32(rf.errno), rf.errno, rf.msg),
		map[string]any{"errno": uint32(rf.errno), "message": rf.msg, "reason": reason})
	t.replied(rf.errno)
}

// mappedCwd records the working directory decision.
func (t *sessionTrace) mappedCwd(guest, dir, warning string, warn bool) {
	if !t.on() {
		return
	}
	text := fmt.Sprintf("guest %s -> host %s", guest, dir)
	switch {
	case warning != "" && warn:
		text = fmt.Sprintf("guest %s is not in a share: fallback %s (a warning line goes to the guest's stderr: [lab] cwdWarning)", guest, dir)
	case warning != "":
		text = fmt.Sprintf("guest %s is not in a share: fallback %s (logged only, as WSL writes nothing there)", guest, dir)
	}
	t.record(trace.StepCwd, text, map[string]any{"guest": guest, "host": dir, "fallback": warning != ""})
}

// started records the host process and the environment that crossed.
func (t *sessionTrace) started(p *process, cmd *exec.Cmd, req *wire.Launch) {
	if !t.on() {
		return
	}
	how := "pipes"
	if p.ptmx != nil {
		how = fmt.Sprintf("a pty %dx%d", req.Rows, req.Cols)
	}
	t.record(trace.StepStart, fmt.Sprintf("host pid %d (own process group) on %s: %s %q", p.pid, how, cmd.Path, cmd.Args),
		map[string]any{"pid": p.pid, "path": cmd.Path, "argv": cmd.Args, "dir": cmd.Dir, "tty": p.ptmx != nil})
	crossed, refused := envDecision(req.Env, cmd.Env)
	text := "no LABENV: nothing crossed"
	if len(crossed)+len(refused) > 0 {
		var c, r []string
		for _, v := range crossed {
			c = append(c, v["text"].(string))
		}
		for _, v := range refused {
			r = append(r, v["text"].(string))
		}
		text = "crossed: " + orNone(c)
		if len(r) > 0 {
			text += "; refused: " + strings.Join(r, ", ")
		}
	}
	t.record(trace.StepHostEnv, text, map[string]any{"crossed": crossed, "refused": refused})
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// envDecision tells, for each variable the guest sent, whether it reached the program's
// environment env (and with which value) or why not.
func envDecision(sent []wire.EnvVar, env []string) (crossed, refused []map[string]any) {
	var spec []EnvVar
	for _, v := range sent {
		if v.Name == LabEnvName && v.Flags&wire.EnvUnset == 0 {
			spec = ParseLabEnv(v.Value)
			break
		}
	}
	named := map[string]EnvVar{}
	for _, v := range spec {
		if _, dup := named[v.Name]; !dup {
			named[v.Name] = v
		}
	}
	for _, v := range sent {
		host, present := lookupEnv(env, v.Name)
		n, ok := named[v.Name]
		switch {
		case v.Name == LabEnvName:
			crossed = append(crossed, map[string]any{"name": v.Name, "value": host, "text": v.Name})
		case !ok:
			refused = append(refused, map[string]any{"name": v.Name, "reason": "not named in LABENV", "text": v.Name + " (not named in LABENV)"})
		case !n.ToHost:
			refused = append(refused, map[string]any{"name": v.Name, "reason": "LABENV marks it /u (host to guest only)", "text": v.Name + " (/u: host to guest only)"})
		case v.Flags&wire.EnvUnset != 0:
			crossed = append(crossed, map[string]any{"name": v.Name, "unset": true, "text": v.Name + " removed (unset in the guest)"})
		case !present:
			refused = append(refused, map[string]any{"name": v.Name, "reason": "dropped by the relay", "text": v.Name + " (dropped by the relay)"})
		default:
			text := fmt.Sprintf("%s=%q", v.Name, host)
			if host != v.Value {
				text = fmt.Sprintf("%s %q -> %q", v.Name, v.Value, host)
			}
			crossed = append(crossed, map[string]any{"name": v.Name, "guest_value": v.Value, "value": host, "translated": host != v.Value, "text": text})
		}
	}
	return crossed, refused
}

// replied records the LaunchResult going out: the end of the handshake (its T3).
func (t *sessionTrace) replied(errno wire.Errno) {
	if !t.on() {
		return
	}
	what := "started"
	if errno != 0 {
		what = errno.Error()
	}
	t.record(trace.StepReply, fmt.Sprintf("Hello + LaunchResult (%s), %.3f ms after accept", what, float64(time.Since(t.start))/1e6),
		map[string]any{"errno": uint32(errno)})
}

// firstOutput returns r, recording the first bytes read from it (the program's first
// output on stream id, for lab bench --breakdown) when tracing; r itself otherwise.
func (t *sessionTrace) firstOutput(id wire.StreamID, r io.Reader) io.Reader {
	if !t.on() {
		return r
	}
	return &firstReader{r: r, seen: func(n int) {
		t.record(trace.StepFirstOutput, fmt.Sprintf("first %d bytes of %v read from the program", n, id), map[string]any{"stream": id.String(), "bytes": n})
	}}
}

// firstReader calls seen once, after the first read that returns bytes.
type firstReader struct {
	r    io.Reader
	seen func(n int)
}

func (f *firstReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if n > 0 && f.seen != nil {
		f.seen(n)
		f.seen = nil
	}
	return n, err
}

// delivered records a signal from the guest.
func (t *sessionTrace) delivered(signo uint8) {
	if !t.on() {
		return
	}
	t.record(trace.StepSignal, fmt.Sprintf("%v to the process group", syscall.Signal(signo)), map[string]any{"signo": signo})
}

// exited records the program's exit as wait4 saw it, then the end of the session's output
// (both streams at EOF, or the drain deadline after the exit: descendants such as Wine's
// services holding the pipe), before its Exit frame goes out (so the records are written
// before the guest can see the exit).
func (t *sessionTrace) exited(s ExitStatus, p *process) {
	if !t.on() {
		return
	}
	if p != nil && p.exitMono != 0 {
		t.sink.RecordAt(p.exitMono, time.Now().Add(-time.Duration(trace.Mono()-p.exitMono)), t.id, trace.StepProgramExit,
			fmt.Sprintf("host pid %d exited (%s)", p.pid, s), map[string]any{"pid": p.pid, "code": s.Code, "signal": s.Signal})
	}
	how, drained := "both output EOFs", int64(0)
	if p != nil && p.exitMono != 0 {
		drained = trace.Mono() - p.exitMono
		how = fmt.Sprintf("both output EOFs, %.3f ms after the program exited", float64(drained)/1e6)
		if p.cut.Load() {
			how = fmt.Sprintf("the output drain deadline (%v idle after the exit: a descendant holds the output open), %.3f ms after the program exited", p.drain, float64(drained)/1e6)
		}
	}
	t.record(trace.StepExit, fmt.Sprintf("%s after %.3f ms; Exit frame sent after %s", s, float64(time.Since(t.start))/1e6, how),
		map[string]any{"code": s.Code, "signal": s.Signal, "core": s.Core, "session_ns": time.Since(t.start).Nanoseconds(),
			"drained_ns": drained, "drain_deadline": p != nil && p.cut.Load()})
}

// lostSession records a session that ended before the program.
func (t *sessionTrace) lostSession(err error) {
	if !t.on() {
		return
	}
	t.record(trace.StepLost, fmt.Sprintf("connection ended before the program: %v (process group killed)", err), map[string]any{"error": err.Error()})
}
