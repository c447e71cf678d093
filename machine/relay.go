package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lab/host"
	"lab/provision"
	"lab/trace"
	"lab/vm"
	"lab/wineprefix"
	"lab/wire"
)

// Files the relay task keeps in the VM's state directory (they outlive the hostagent:
// logs for the user, the trace for lab trace, env-allow as the user's configuration).
const (
	FileRelayLog = "relay.log" // the relay's log (slog text), one line per session event
	// FileEnvAllow lists, one a line ('#' comments), the variables a guest may set although
	// the relay's deny list names them (host.Config.EnvAllow); read by each new generation.
	FileEnvAllow = "env-allow"
	// FileRelayTrace holds the relay's steps of traced launches (lab trace), JSON lines of
	// lab/trace.Event; it starts over past 4 MiB, keeping the previous part as .1.
	FileRelayTrace = "relay-trace.jsonl"
)

// Requests the relay task answers on the hostagent's endpoint (vm.Client.Call).
const (
	RequestRelayStop   = "relay.stop"   // stop listening (running launches go on); reply RelayState once stopped
	RequestRelayStart  = "relay.start"  // listen again; reply RelayState once serving
	RequestRelayReload = "relay.reload" // a new generation with the allow list on disk; reply RelayState
	RequestRelayLog    = "relay.log"    // args RelayLogArgs; reply []LogRecord
)

// RelayPhase is what the relay does.
type RelayPhase string

const (
	RelayServing RelayPhase = "serving"
	RelayStopped RelayPhase = "stopped" // by RequestRelayStop, or the VM stopped
	RelayFailed  RelayPhase = "failed"
)

// RelayState is the relay task's state, computed for each request (lab status shows it).
type RelayState struct {
	State      RelayPhase `json:"state"`
	Error      string     `json:"error,omitempty"`
	Listen     string     `json:"listen"`   // e.g. "vsock port 5555 (user backend)"
	PeerCID    uint32     `json:"peer_cid"` // the only guest CID accepted
	Exposed    int        `json:"exposed"`  // entries on the allow list
	Generation int        `json:"generation"`
	Since      time.Time  `json:"since"`
	PID        int        `json:"pid"`
	Stats      host.Stats `json:"stats"` // summed over every generation since the hostagent started
}

// RelayStateOf is the relay's state in a VM's status (nil when the hostagent did not
// answer or runs no relay).
func RelayStateOf(st *vm.Status) *RelayState {
	var r RelayState
	if !taskDetail(st, "relay", &r) {
		return nil
	}
	return &r
}

// taskDetail decodes the detail a Task reported in st into v.
func taskDetail(st *vm.Status, task string, v any) bool {
	if st == nil || st.Health == nil {
		return false
	}
	for _, t := range st.Health.Tasks {
		if t.Name == task && len(t.Detail) > 0 {
			return json.Unmarshal(t.Detail, v) == nil
		}
	}
	return false
}

// RelayTask serves the relay for the VM as long as it runs: on the vsock port
// wire.DefaultPort of whichever backend the VM uses (in process for the userspace
// backend, github.com/mdlayher/vsock for kernel vsock), accepting only the VM's CID and
// its token. It answers RequestRelayStop, RequestRelayStart, RequestRelayReload (a new
// generation for new launches, running ones finish under the old) and RequestRelayLog.
func RelayTask() vm.Task { return vm.Task{Name: "relay", Run: runRelay} }

func runRelay(ctx context.Context, env *vm.Env) error {
	lf, err := os.OpenFile(filepath.Join(env.StateDir, FileRelayLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("machine: relay log: %w", err)
	}
	defer lf.Close()
	ring := newLogRing(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}), relayLogRecords)
	t := &relayTask{env: env, log: slog.New(ring), logs: ring, port: wire.DefaultPort,
		cmds: make(chan relayCmd), done: make(chan struct{}), state: RelayStopped, since: time.Now()}
	if tf, err := trace.OpenFile(filepath.Join(env.StateDir, FileRelayTrace), 0); err != nil {
		t.log.Warn("relay: no trace records (lab trace shows only the guest's side)", "err", err)
	} else {
		defer tf.Close()
		t.trace = trace.NewSink(tf, trace.SideRelay)
	}
	env.Handle(RequestRelayStop, t.command(relayStop))
	env.Handle(RequestRelayStart, t.command(relayStart))
	env.Handle(RequestRelayReload, t.command(relayReload))
	env.Handle(RequestRelayLog, t.logSince)
	env.Report(func(context.Context) any { return t.snapshot() })
	err = t.run(ctx)
	if err != nil {
		t.log.Error("relay: stopped", "err", err)
		t.setState(RelayFailed, err)
	}
	t.mu.Lock()
	t.endErr = err
	t.mu.Unlock()
	close(t.done)
	return err
}

type relayOp int

const (
	relayStop relayOp = iota
	relayStart
	relayReload
)

var relayOpNames = [...]string{relayStop: RequestRelayStop, relayStart: RequestRelayStart, relayReload: RequestRelayReload}

// relayCmd is a request handed to the task's loop; done gets the outcome once it applied.
type relayCmd struct {
	op   relayOp
	done chan error
}

type relayTask struct {
	env   *vm.Env
	log   *slog.Logger
	logs  *logRing
	port  uint32
	trace *trace.Sink
	cmds  chan relayCmd
	done  chan struct{} // closed when run returned

	mu      sync.Mutex
	relays  []*host.Relay // every generation, for the counters
	gen     int
	exposed int
	since   time.Time
	state   RelayPhase
	err     error // of the current state
	endErr  error // run's
}

func (t *relayTask) stats() host.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var s host.Stats
	for _, r := range t.relays {
		x := r.Stats()
		s.Sessions += x.Sessions
		s.Active += x.Active
		s.Pending += x.Pending
		s.Waiting += x.Waiting
		s.Launched += x.Launched
		s.Refused += x.Refused
		s.Errors += x.Errors
		s.BytesIn += x.BytesIn
		s.BytesOut += x.BytesOut
		s.Orphans += x.Orphans
	}
	return s
}

func (t *relayTask) setState(state RelayPhase, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if state != t.state {
		t.state, t.since = state, time.Now()
	}
	t.err = err
}

// snapshot computes the RelayState now.
func (t *relayTask) snapshot() RelayState {
	t.mu.Lock()
	st := RelayState{
		State: t.state, Listen: fmt.Sprintf("vsock port %d (%s backend)", t.port, t.env.Vsock),
		PeerCID: t.env.CID, Exposed: t.exposed, Generation: t.gen, Since: t.since, PID: os.Getpid(),
	}
	if t.err != nil {
		st.Error = t.err.Error()
	}
	t.mu.Unlock()
	st.Stats = t.stats()
	return st
}

// command is the handler of a request that the task's loop applies: it replies with the
// state once the loop has applied it (stopped listening, serving again, new generation).
func (t *relayTask) command(op relayOp) vm.Handler {
	return func(ctx context.Context, _ json.RawMessage) (any, error) {
		c := relayCmd{op: op, done: make(chan error, 1)}
		select {
		case t.cmds <- c:
		case <-t.done:
			return nil, t.ended(op)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case err := <-c.done:
			if err != nil {
				return nil, err
			}
			return t.snapshot(), nil
		case <-t.done:
			return nil, t.ended(op)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (t *relayTask) ended(op relayOp) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.endErr != nil {
		return fmt.Errorf("machine: %s: the relay has stopped: %w", relayOpNames[op], t.endErr)
	}
	return fmt.Errorf("machine: %s: the relay has stopped (the VM is stopping)", relayOpNames[op])
}

func (t *relayTask) config() (host.Config, error) {
	in, err := Instance(t.env.StateDir)
	if err != nil {
		return host.Config{}, err
	}
	token, err := provision.EnsureToken(t.env.StateDir)
	if err != nil {
		return host.Config{}, err
	}
	exposed, err := provision.LoadExposed(t.env.StateDir)
	if err != nil {
		return host.Config{}, err
	}
	cfg := host.Config{
		Token:   token,
		PeerCID: t.env.CID,
		Logger:  t.log,
		Trace:   t.trace,
		Procs:   t.env.Procs, // host programs die with the hostagent
		// A generation retired by lab expose lets its running programs finish.
		DrainTimeout: 10 * time.Minute,
	}
	allowEnv, err := readEnvAllow(filepath.Join(t.env.StateDir, FileEnvAllow))
	if err != nil {
		return host.Config{}, err
	}
	cfg.EnvAllow = allowEnv
	if cfg.Formats, err = LoadFormats(t.env.StateDir); err != nil {
		return host.Config{}, err
	}
	cfg.Shares = append(cfg.Shares, in.Shares...) // the relay ignores Tag and ReadOnly
	for _, e := range exposed {
		cfg.Allow = append(cfg.Allow, host.Exposed{Name: e.Name, HostPath: e.HostPath})
	}
	// The Windows personality: PE files run in the VM's own prefix (the one whose
	// drive_c the guest sees at /mnt/c), kept warm by the wine task.
	if dir := PrefixOf(in); dir != "" {
		cfg.Wine.Prefix = dir
		if loader, _, err := wineprefix.Find(wineprefix.Options{}); err == nil {
			cfg.Wine.Path = loader
		}
	}
	t.mu.Lock()
	t.exposed = len(exposed)
	t.mu.Unlock()
	return cfg, nil
}

// run serves until ctx ends: listening (serveListener) until a stop request, then
// waiting for a start request. Each request is acknowledged once it took effect.
func (t *relayTask) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var starting *relayCmd // acknowledged once the first generation serves
	for ctx.Err() == nil {
		l, err := t.env.Listen(t.port)
		if err != nil {
			err = fmt.Errorf("machine: relay: listen on vsock port %d: %w", t.port, err)
			if starting != nil {
				starting.done <- err
			}
			return err
		}
		stop, err := t.serveListener(ctx, l, starting, &wg)
		starting = nil
		if err != nil {
			return err
		}
		if stop == nil { // ctx ended
			break
		}
		t.log.Info("relay: stopped by " + RequestRelayStop)
		t.setState(RelayStopped, nil)
		stop.done <- nil
		for starting == nil {
			select {
			case <-ctx.Done():
				t.setState(RelayStopped, nil)
				return nil
			case c := <-t.cmds:
				if c.op == relayStart {
					c := c
					starting = &c
				} else {
					c.done <- nil // stopped already; a reload takes effect at the next start
				}
			}
		}
	}
	t.setState(RelayStopped, nil)
	return nil
}

// serveListener accepts on l and hands each connection to the current generation's
// relay until ctx ends (nil, nil) or a stop request comes (returned, for run to
// acknowledge once l is closed). A reload request makes a new generation.
func (t *relayTask) serveListener(ctx context.Context, l net.Listener, starting *relayCmd, wg *sync.WaitGroup) (*relayCmd, error) {
	conns := make(chan net.Conn)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			select {
			case conns <- c:
			case <-ctx.Done():
				c.Close()
			}
		}
	}()
	defer l.Close()

	var cur atomic.Pointer[chanListener]
	newGen := func() error {
		cfg, err := t.config()
		if err != nil {
			return err
		}
		r, err := host.NewRelay(cfg)
		if err != nil {
			return err
		}
		old := cur.Swap(newChanListener(l.Addr()))
		if old != nil {
			old.Close() // the old generation stops accepting and drains; handOver moves on
		}
		t.mu.Lock()
		t.relays = append(t.relays, r)
		t.gen++
		gen := t.gen
		t.mu.Unlock()
		wg.Add(1)
		go func(cl *chanListener) {
			defer wg.Done()
			if err := r.Serve(ctx, cl); err != nil && !errors.Is(err, net.ErrClosed) {
				t.log.Warn("relay: generation ended", "generation", gen, "err", err)
			}
		}(cur.Load())
		t.log.Info("relay: serving", "generation", gen, "listen", l.Addr().String(), "peer_cid", t.env.CID,
			"shares", len(cfg.Shares), "exposed", len(cfg.Allow))
		t.setState(RelayServing, nil)
		return nil
	}
	err := newGen()
	if starting != nil {
		starting.done <- err
	}
	if err != nil {
		return nil, err
	}
	defer func() { cur.Load().Close() }()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case err := <-acceptErr:
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, fmt.Errorf("machine: relay: accept: %w", err)
		case c := <-conns:
			go handOver(&cur, c) // never block the loop (the relay may be at MaxSessions)
		case c := <-t.cmds:
			switch c.op {
			case relayStop:
				return &c, nil
			case relayStart:
				c.done <- nil // serving already
			case relayReload:
				err := newGen()
				if err != nil {
					t.log.Error("relay: new allow list not applied; keeping the previous one", "err", err)
					t.setState(RelayServing, err)
				}
				c.done <- err
			}
		}
	}
}

// RelayLogArgs are the arguments of RequestRelayLog.
type RelayLogArgs struct {
	Since time.Time `json:"since"`
}

// relayLogRecords is how many of the relay's latest log records the task keeps for
// RequestRelayLog (the file relay.log has them all).
const relayLogRecords = 2000

func (t *relayTask) logSince(_ context.Context, args json.RawMessage) (any, error) {
	var a RelayLogArgs
	if len(args) > 0 {
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("machine: %s: %w", RequestRelayLog, err)
		}
	}
	return t.logs.since(a.Since), nil
}

// LogRecord is one record of the relay's log, as RequestRelayLog returns it.
type LogRecord struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	Attrs []LogAttr `json:"attrs,omitempty"`
}

// LogAttr is one key=value of a LogRecord (groups flattened as "group.key").
type LogAttr struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// String formats r as a line of slog's text handler would.
func (r LogRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "time=%s level=%s msg=%s", r.Time.Format(time.RFC3339Nano), r.Level, quoteLogValue(r.Msg))
	for _, a := range r.Attrs {
		fmt.Fprintf(&b, " %s=%s", a.Key, quoteLogValue(a.Value))
	}
	return b.String()
}

func quoteLogValue(s string) string {
	if s == "" || strings.ContainsAny(s, " =\"\t\n") {
		return strconv.Quote(s)
	}
	return s
}

// logRing is a slog.Handler that keeps the latest records (for RequestRelayLog) and
// passes every record on to next (relay.log).
type logRing struct {
	next   slog.Handler
	attrs  []LogAttr // from WithAttrs
	prefix string    // from WithGroup
	ring   *ring
}

type ring struct {
	mu   sync.Mutex
	recs []LogRecord
	head int // next slot once full
	max  int
}

func newLogRing(next slog.Handler, max int) *logRing {
	return &logRing{next: next, ring: &ring{max: max}}
}

func (h *logRing) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logRing) Handle(ctx context.Context, r slog.Record) error {
	rec := LogRecord{Time: r.Time, Level: r.Level.String(), Msg: r.Message, Attrs: append([]LogAttr(nil), h.attrs...)}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
		return true
	})
	h.ring.add(rec)
	return h.next.Handle(ctx, r)
}

func appendAttr(out []LogAttr, prefix string, a slog.Attr) []LogAttr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix + a.Key + "."
		if a.Key == "" {
			p = prefix
		}
		for _, g := range v.Group() {
			out = appendAttr(out, p, g)
		}
		return out
	}
	return append(out, LogAttr{Key: prefix + a.Key, Value: v.String()})
}

func (h *logRing) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]LogAttr(nil), h.attrs...)
	for _, a := range as {
		c.attrs = appendAttr(c.attrs, h.prefix, a)
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *logRing) WithGroup(name string) slog.Handler {
	c := *h
	c.prefix = h.prefix + name + "."
	c.next = h.next.WithGroup(name)
	return &c
}

func (r *ring) add(rec LogRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) < r.max {
		r.recs = append(r.recs, rec)
		return
	}
	r.recs[r.head] = rec
	r.head = (r.head + 1) % r.max
}

// since returns the kept records stamped at or after t, oldest first.
func (h *logRing) since(t time.Time) []LogRecord {
	r := h.ring
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []LogRecord{}
	for i := range r.recs {
		rec := r.recs[(r.head+i)%len(r.recs)]
		if !rec.Time.Before(t) {
			out = append(out, rec)
		}
	}
	return out
}

// chanListener is a net.Listener fed by the task's accept loop: one per generation.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
	wait time.Duration // deliverTimeout
}

var _ net.Listener = (*chanListener)(nil)

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{}), wait: deliverTimeout}
}

// deliverTimeout bounds how long an accepted connection waits for the relay to take it.
// The relay takes every connection at once (its budgets apply after accept); this only
// keeps a stuck generation from collecting parked connections.
const deliverTimeout = 10 * time.Second

// deliver hands c to the generation's relay; false when the generation was closed before
// it took c (c is then still open, for the next generation).
func (l *chanListener) deliver(c net.Conn) bool {
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.ch <- c:
	case <-l.done:
		return false
	case <-t.C:
		c.Close()
	}
	return true
}

// handOver gives an accepted connection to the generation that is current when a relay
// takes it: a connection accepted while lab expose replaces the generation goes to the new
// one, not to the closed old one, which would close it unanswered (a launch lost: the guest
// saw "the relay closed the connection during the handshake"). With no newer generation
// (the task is ending) it is closed.
func handOver(cur *atomic.Pointer[chanListener], c net.Conn) {
	for {
		l := cur.Load()
		if l.deliver(c) {
			return
		}
		if cur.Load() == l {
			c.Close()
			return
		}
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: net.ErrClosed}
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// readEnvAllow reads FileEnvAllow; a missing file allows nothing extra.
func readEnvAllow(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line, _, _ = strings.Cut(line, "#"); strings.TrimSpace(line) != "" {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out, nil
}
