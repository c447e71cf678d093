package labvm

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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lab/host"
	"lab/internal/fsutil"
	"lab/provision"
	"lab/trace"
	"lab/vm"
	"lab/wineprefix"
	"lab/wire"
)

// Files the relay task keeps in the VM's state directory.
const (
	FileRelayLog   = "relay.log"  // the relay's log (slog text), one line per session event
	FileRelayState = "relay.json" // RelayState, rewritten every second and on every change
	FileRelayStop  = "relay.stop" // while this file exists the relay does not listen
	// FileEnvAllow lists, one a line ('#' comments), the variables a guest may set although
	// the relay's deny list names them (host.Config.EnvAllow); read by each new generation.
	FileEnvAllow = "env-allow"
	// FileRelayTrace holds the relay's steps of traced launches (lab trace), JSON lines of
	// lab/trace.Event; it starts over past 4 MiB, keeping the previous part as .1.
	FileRelayTrace = "relay-trace.jsonl"
)

// RelayState is what the relay task publishes for lab status.
type RelayState struct {
	State      string     `json:"state"` // "serving", "stopped" (relay.stop exists), "failed"
	Error      string     `json:"error,omitempty"`
	Listen     string     `json:"listen"`   // e.g. "vsock port 5555 (user backend)"
	PeerCID    uint32     `json:"peer_cid"` // the only guest CID accepted
	Exposed    int        `json:"exposed"`  // entries on the allow list
	Generation int        `json:"generation"`
	Since      time.Time  `json:"since"`
	Updated    time.Time  `json:"updated"`
	PID        int        `json:"pid"`
	Stats      host.Stats `json:"stats"` // summed over every generation since the hostagent started
}

// ReadRelayState reads the relay's published state; Updated tells how fresh it is.
func ReadRelayState(stateDir string) (*RelayState, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, FileRelayState))
	if err != nil {
		return nil, err
	}
	var st RelayState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("labvm: %s: %w", FileRelayState, err)
	}
	return &st, nil
}

// RelayTask serves the relay for the VM as long as it runs: on the vsock port
// wire.DefaultPort of whichever backend the VM uses (in process for the userspace
// backend, github.com/mdlayher/vsock for kernel vsock), accepting only the VM's CID and
// its token. A change of the allow list (lab expose) starts a new relay generation for
// new launches while running ones finish under the old; relay.stop stops listening.
func RelayTask() vm.Task { return vm.Task{Name: "relay", Run: runRelay} }

func runRelay(ctx context.Context, env *vm.Env) error {
	lf, err := os.OpenFile(filepath.Join(env.StateDir, FileRelayLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("labvm: relay log: %w", err)
	}
	defer lf.Close()
	log := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t := &relayTask{env: env, log: log, port: wire.DefaultPort}
	if tf, err := trace.OpenFile(filepath.Join(env.StateDir, FileRelayTrace), 0); err != nil {
		log.Warn("relay: no trace records (lab trace shows only the guest's side)", "err", err)
	} else {
		defer tf.Close()
		t.trace = trace.NewSink(tf, trace.SideRelay)
	}
	err = t.run(ctx)
	if err != nil {
		log.Error("relay: stopped", "err", err)
		t.publish("failed", err)
	}
	return err
}

type relayTask struct {
	env   *vm.Env
	log   *slog.Logger
	port  uint32
	trace *trace.Sink

	mu      sync.Mutex
	relays  []*host.Relay // every generation, for the counters
	gen     int
	exposed int
	since   time.Time
	state   string
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

func (t *relayTask) publish(state string, err error) {
	t.mu.Lock()
	if state != t.state {
		t.state, t.since = state, time.Now()
	}
	st := RelayState{
		State: state, Listen: fmt.Sprintf("vsock port %d (%s backend)", t.port, t.env.Vsock),
		PeerCID: t.env.CID, Exposed: t.exposed, Generation: t.gen, Since: t.since,
		Updated: time.Now(), PID: os.Getpid(),
	}
	t.mu.Unlock()
	if err != nil {
		st.Error = err.Error()
	}
	st.Stats = t.stats()
	b, _ := json.MarshalIndent(st, "", "  ")
	p := filepath.Join(t.env.StateDir, FileRelayState)
	fsutil.WriteFile(p, append(b, '\n'), 0o644)
}

// fileStamp identifies a version of a file cheaply (mtime and size).
func fileStamp(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return "absent"
	}
	return fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
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
	cfg.Shares = append(cfg.Shares, in.Shares...)
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

func (t *relayTask) run(ctx context.Context) error {
	stopFile := filepath.Join(t.env.StateDir, FileRelayStop)
	allowFile := filepath.Join(t.env.StateDir, provision.ExposedFile)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()

	for ctx.Err() == nil {
		if _, err := os.Stat(stopFile); err == nil {
			t.log.Info("relay: stopped by " + FileRelayStop)
			t.publish("stopped", nil)
			for ctx.Err() == nil {
				if _, err := os.Stat(stopFile); errors.Is(err, fs.ErrNotExist) {
					break
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
					t.publish("stopped", nil)
				}
			}
			continue
		}
		l, err := t.env.Listen(t.port)
		if err != nil {
			return fmt.Errorf("labvm: relay: listen on vsock port %d: %w", t.port, err)
		}
		err = t.serveListener(ctx, l, stopFile, allowFile, tick.C, &wg)
		if err != nil {
			return err
		}
	}
	t.publish("stopped", nil)
	return nil
}

// serveListener accepts on l and hands each connection to the current generation's
// relay, until ctx ends or relay.stop appears; a changed allow list makes a new
// generation.
func (t *relayTask) serveListener(ctx context.Context, l net.Listener, stopFile, allowFile string, tick <-chan time.Time, wg *sync.WaitGroup) error {
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
	stamp := ""
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
		t.publish("serving", nil)
		return nil
	}
	stamp = fileStamp(allowFile)
	if err := newGen(); err != nil {
		return err
	}
	defer func() { cur.Load().Close() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-acceptErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("labvm: relay: accept: %w", err)
		case c := <-conns:
			go handOver(&cur, c) // never block the loop (the relay may be at MaxSessions)
		case <-tick:
			if _, err := os.Stat(stopFile); err == nil {
				return nil // run() sees the file and waits
			}
			if s := fileStamp(allowFile); s != stamp {
				stamp = s
				if err := newGen(); err != nil {
					t.log.Error("relay: new allow list not applied; keeping the previous one", "err", err)
					t.publish("serving", err)
				}
				continue
			}
			t.publish("serving", nil)
		}
	}
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
		return nil, fmt.Errorf("labvm: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line, _, _ = strings.Cut(line, "#"); strings.TrimSpace(line) != "" {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out, nil
}
