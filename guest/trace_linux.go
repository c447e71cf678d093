package guest

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"lab/trace"
	"lab/wire"
)

// TraceEnv names the file the interpreter appends its steps to, as JSON lines
// (lab/trace.Event), when set: `lab trace` sets it for the one command it runs. The
// interpreter then also sends a trace id in its Launch (protocol 2.1) so the relay records
// its side under the same id. Unset (every ordinary launch), tracing costs one getenv.
// A file that cannot be opened disables tracing and changes nothing else.
const TraceEnv = "LAB_TRACE"

// binfmtDir is where the kernel shows the binfmt_misc rules.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// guestTrace records one launch's steps. A nil *guestTrace records nothing, so the
// interpreter calls it unconditionally.
type guestTrace struct {
	sink  *trace.Sink
	id    string
	f     *os.File
	sent  int64 // when Hello + Launch were written (the handshake's T1)
	relay *wire.Hello
}

// openTrace starts tracing when TraceEnv names a file.
func openTrace(getenv func(string) string) *guestTrace {
	path := getenv(TraceEnv)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil
	}
	// getrandom(2) rather than crypto/rand: crypto would link crypto/..., math/big and a
	// 32 MiB BSS into every launch's interpreter for eight bytes of a trace id.
	var b [8]byte
	if n, err := unix.Getrandom(b[:], 0); err != nil || n != len(b) {
		f.Close()
		return nil
	}
	return &guestTrace{sink: trace.NewSink(f, trace.SideGuest), id: hex.EncodeToString(b[:]), f: f}
}

func (t *guestTrace) close() {
	if t != nil {
		t.f.Close()
	}
}

// ID is the trace id to send in the Launch ("" when not tracing).
func (t *guestTrace) ID() string {
	if t == nil {
		return ""
	}
	return t.id
}

func (t *guestTrace) record(step, text string, data map[string]any) {
	if t != nil {
		t.sink.Record(t.id, step, text, data)
	}
}

// argv records the interpreter's own argv as the kernel built it.
func (t *guestTrace) argv(args []string) {
	if t == nil {
		return
	}
	exe, _ := os.Readlink("/proc/self/exe")
	text := fmt.Sprintf("%q", args)
	if len(args) >= 3 {
		text += fmt.Sprintf("  (flag P: argv[1] %q is the file execve was given, argv[2] %q the caller's argv[0])", args[1], args[2])
	}
	t.record(trace.StepArgv, text, map[string]any{"argv": args, "exe": exe, "uid": os.Getuid(), "ppid": os.Getppid()})
}

// binfmtRule is one rule as /proc/sys/fs/binfmt_misc/NAME shows it.
type binfmtRule struct {
	Name        string `json:"name"`
	Enabled     bool   `json:"enabled"`
	Interpreter string `json:"interpreter"`
	Flags       string `json:"flags"`
	Offset      int    `json:"offset"`
	Magic       string `json:"magic,omitempty"` // hex, as the kernel prints it
	Mask        string `json:"mask,omitempty"`
	Extension   string `json:"extension,omitempty"`
}

// parseBinfmtRule parses the kernel's text for one rule.
func parseBinfmtRule(name, text string) binfmtRule {
	r := binfmtRule{Name: name}
	for _, line := range strings.Split(text, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "enabled":
			r.Enabled = true
		case "interpreter":
			r.Interpreter = v
		case "flags:":
			r.Flags = v
		case "offset":
			r.Offset, _ = strconv.Atoi(v)
		case "magic":
			r.Magic = v
		case "mask":
			r.Mask = v
		case "extension":
			r.Extension = v
		}
	}
	return r
}

// matches reports whether the kernel would take file (its first bytes in head) with r
// and run interp.
func (r binfmtRule) matches(file string, head []byte, interp string) bool {
	if !r.Enabled || r.Interpreter != interp {
		return false
	}
	if r.Extension != "" {
		return strings.HasSuffix(filepath.Base(file), "."+strings.TrimPrefix(r.Extension, "."))
	}
	magic, err := hex.DecodeString(r.Magic)
	if err != nil || len(magic) == 0 || r.Offset < 0 || r.Offset+len(magic) > len(head) {
		return false
	}
	var mask []byte // nil: all bits
	if r.Mask != "" {
		if mask, err = hex.DecodeString(r.Mask); err != nil || len(mask) != len(magic) {
			return false
		}
	}
	got := head[r.Offset : r.Offset+len(magic)]
	for i := range magic {
		m := byte(0xff)
		if mask != nil {
			m = mask[i]
		}
		if got[i]&m != magic[i]&m {
			return false
		}
	}
	return true
}

// flagMeaning explains binfmt_misc flags.
func flagMeaning(flags string) string {
	var out []string
	for _, f := range flags {
		switch f {
		case 'P':
			out = append(out, "P: keep the caller's argv[0]")
		case 'F':
			out = append(out, "F: interpreter opened at registration")
		case 'O':
			out = append(out, "O: file passed open")
		case 'C':
			out = append(out, "C: credentials of the file")
		}
	}
	return strings.Join(out, "; ")
}

// binfmt records the rule(s) that match file and name this interpreter: the kernel's
// choice, seen from the rules it shows (a rule added between exec and now would show
// too; none is in practice).
func (t *guestTrace) binfmt(args []string) {
	if t == nil || len(args) < 2 {
		return
	}
	head, _, _ := readHead(args[1], -1) // not the passed descriptor: the launch reads that
	ents, err := os.ReadDir(binfmtDir)
	if err != nil {
		t.record(trace.StepBinfmt, fmt.Sprintf("cannot read %s: %v", binfmtDir, err), nil)
		return
	}
	var matched []binfmtRule
	var texts []string
	for _, e := range ents {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(binfmtDir, e.Name()))
		if err != nil {
			continue
		}
		r := parseBinfmtRule(e.Name(), string(b))
		if r.matches(args[1], head, args[0]) {
			matched = append(matched, r)
			text := fmt.Sprintf("rule %s: magic %s at offset %d, flags %s (%s), interpreter %s",
				r.Name, printableMagic(r.Magic), r.Offset, r.Flags, flagMeaning(r.Flags), r.Interpreter)
			if r.Extension != "" {
				text = fmt.Sprintf("rule %s: extension .%s, flags %s (%s), interpreter %s", r.Name, r.Extension, r.Flags, flagMeaning(r.Flags), r.Interpreter)
			}
			texts = append(texts, text)
		}
	}
	if len(matched) == 0 {
		t.record(trace.StepBinfmt, fmt.Sprintf("no enabled rule in %s matches %s and names %s (started by hand?)", binfmtDir, args[1], args[0]), map[string]any{"rules": []binfmtRule{}})
		return
	}
	t.record(trace.StepBinfmt, strings.Join(texts, " | "), map[string]any{"rules": matched, "dir": binfmtDir})
}

// printableMagic shows a hex magic as a quoted string ("MZ", "#!lab-host\n").
func printableMagic(h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		return h
	}
	return strconv.Quote(string(b))
}

// config records the configuration file the interpreter read.
func (t *guestTrace) config(path string, c *Config) {
	if t == nil {
		return
	}
	shares := make([]map[string]string, 0, len(c.Shares))
	var st []string
	for _, s := range c.Shares {
		shares = append(shares, map[string]string{"guest": s.GuestPath, "host": s.HostPath, "drive": s.Drive})
		st = append(st, s.GuestPath+" = host "+s.HostPath)
	}
	text := fmt.Sprintf("%s: relay %s, token %s, shares [%s]", path, c.Relay, c.TokenFile, strings.Join(st, ", "))
	t.record(trace.StepConfig, text, map[string]any{"path": path, "relay": c.Relay, "token_file": c.TokenFile, "shares": shares,
		"connect_timeout_ms": c.ConnectTimeout.Milliseconds(), "handshake_timeout_ms": c.HandshakeTimeout.Milliseconds()})
}

// launch records what the interpreter decided to send: format, path or command, env.
func (t *guestTrace) launch(req *wire.Launch) {
	if t == nil {
		return
	}
	var text string
	switch req.Format {
	case wire.FormatHost:
		text = fmt.Sprintf("format host (a stub): asks for the exposed command %q", req.Path)
	default:
		text = fmt.Sprintf("format %s: asks for the guest file %s (absolute, guest symlinks resolved)", req.Format, req.Path)
	}
	t.record(trace.StepFile, text+fmt.Sprintf(", argv %q, cwd %s", req.Argv, req.Cwd),
		map[string]any{"format": req.Format, "path": req.Path, "argv": req.Argv, "cwd": req.Cwd, "tty": req.Flags&wire.LaunchTTY != 0})
	if len(req.Env) == 0 {
		t.record(trace.StepEnv, "no LABENV: no variables are sent", nil)
		return
	}
	var parts []string
	vars := make([]map[string]any, 0, len(req.Env))
	for _, v := range req.Env {
		vars = append(vars, map[string]any{"name": v.Name, "value": v.Value, "flags": envFlags(v.Flags)})
		if v.Name == LabEnv {
			continue
		}
		if v.Flags&wire.EnvUnset != 0 {
			parts = append(parts, v.Name+" (unset)")
		} else {
			parts = append(parts, fmt.Sprintf("%s=%q%s", v.Name, v.Value, flagSuffix(v.Flags)))
		}
	}
	t.record(trace.StepEnv, fmt.Sprintf("LABENV=%q sends %s", req.Env[0].Value, strings.Join(parts, ", ")), map[string]any{"sent": vars})
}

func envFlags(f wire.EnvFlag) string {
	var s string
	for _, x := range []struct {
		f wire.EnvFlag
		c string
	}{{wire.EnvPath, "p"}, {wire.EnvPathList, "l"}, {wire.EnvToGuest, "u"}, {wire.EnvToHost, "w"}} {
		if f&x.f != 0 {
			s += x.c
		}
	}
	if f&wire.EnvUnset != 0 {
		s += "!"
	}
	return s
}

func flagSuffix(f wire.EnvFlag) string {
	if s := strings.TrimSuffix(envFlags(f), "!"); s != "" {
		return "/" + s
	}
	return ""
}

// connected records the connection to the relay and how long the connect took.
func (t *guestTrace) connected(conn *Conn, relay string, took time.Duration) {
	if t == nil {
		return
	}
	network, l, r := conn.addrs()
	t.record(trace.StepConnect, fmt.Sprintf("%s %s -> %s (relay %s) in %.3f ms", network, l, r, relay, ms(took)),
		map[string]any{"network": network, "local": l, "remote": r, "relay": relay, "connect_ns": took.Nanoseconds()})
}

// now returns the time to record a step with later (recordAt).
func (t *guestTrace) now() int64 {
	if t == nil {
		return 0
	}
	return trace.Mono()
}

// sentHandshake records Hello + Launch written at mono.
func (t *guestTrace) sentHandshake(mono int64, hello *wire.Hello, req *wire.Launch) {
	if t == nil {
		return
	}
	t.sent = mono
	hb, _ := hello.MarshalBinary()
	lb, _ := req.MarshalBinary()
	hs, ls := wire.HeaderSize+len(hb), wire.HeaderSize+len(lb)
	t.sink.RecordAt(mono, time.Now(), t.id, trace.StepSend,
		fmt.Sprintf("Hello %d B (protocol %d.%d, token %d B) + Launch %d B (trace id %s), one write", hs, hello.Major, hello.Minor, len(hello.Token), ls, t.id),
		map[string]any{"hello_bytes": hs, "launch_bytes": ls, "major": hello.Major, "minor": hello.Minor})
}

// relayHello keeps the relay's Hello for the result line.
func (t *guestTrace) relayHello(h *wire.Hello) {
	if t != nil {
		t.relay = h
	}
}

// result records the relay's answer.
func (t *guestTrace) result(res *wire.LaunchResult) {
	if t == nil {
		return
	}
	now := trace.Mono()
	ver := "?"
	if t.relay != nil {
		ver = fmt.Sprintf("%d.%d", t.relay.Major, t.relay.Minor)
	}
	what := "started"
	if res.Errno != 0 {
		what = fmt.Sprintf("refused: %v: %s", res.Errno, oneLine(res.Message))
	}
	t.sink.RecordAt(now, time.Now(), t.id, trace.StepResult,
		fmt.Sprintf("relay speaks %s; %s; %.3f ms after the send", ver, what, ms(time.Duration(now-t.sent))),
		map[string]any{"relay_version": ver, "errno": uint32(res.Errno), "message": res.Message, "round_trip_ns": now - t.sent})
}

// retry records an EAGAIN refusal the interpreter tries again after wait.
func (t *guestTrace) retry(attempt int, res *wire.LaunchResult, wait time.Duration) {
	if t == nil {
		return
	}
	t.record(trace.StepRetry, fmt.Sprintf("attempt %d refused: %v: %s; next attempt in %.3f ms", attempt, res.Errno, oneLine(res.Message), ms(wait)),
		map[string]any{"attempt": attempt, "errno": uint32(res.Errno), "message": res.Message, "wait_ns": wait.Nanoseconds()})
}

// stream records the end of one stream and its byte count.
func (t *guestTrace) stream(name string, n int64, err error) {
	if t == nil {
		return
	}
	text := fmt.Sprintf("%s: %d bytes", name, n)
	dir := "host -> guest"
	if name == "stdin" {
		dir = "guest -> host"
	}
	text += " " + dir
	data := map[string]any{"stream": name, "bytes": n}
	if err != nil {
		text += " (" + err.Error() + ")"
		data["error"] = err.Error()
	}
	t.record(trace.StepStream, text, data)
}

// signal records a forwarded signal.
func (t *guestTrace) signal(sig os.Signal) {
	if t != nil {
		t.record(trace.StepSignal, fmt.Sprintf("forwarded %v to the host process group", sig), map[string]any{"signal": sig.String()})
	}
}

// exit records the program's exit as the relay reported it.
func (t *guestTrace) exit(e *wire.Exit) {
	if t == nil {
		return
	}
	text := fmt.Sprintf("status %d (host exit code %d)", e.Status(), e.Code)
	if e.Signal != 0 {
		text = fmt.Sprintf("status %d (host process killed by signal %d)", e.Status(), e.Signal)
	}
	t.record(trace.StepExit, text, map[string]any{"status": e.Status(), "code": e.Code, "signal": e.Signal})
}

// failed records the interpreter's own error line.
func (t *guestTrace) failed(code int, line string) {
	if t != nil {
		t.record(trace.StepError, fmt.Sprintf("exit %d: %s", code, strings.TrimSpace(line)), map[string]any{"status": code, "message": strings.TrimSpace(line)})
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
