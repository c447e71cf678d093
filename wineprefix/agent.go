package wineprefix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"lab/host/proctree"
	"lab/internal/fsutil"
)

// One prefix may serve several machines at once (lab's default: one Windows side per user, as
// every WSL distribution sees the same C:). Its wineserver and Wine's services then must not
// live in any one machine's process tree: that machine's tree is killed when it goes down
// (package proctree), and the server would die under the others. So a prefix in use is kept
// warm by its own small agent: this binary re-executed (AgentEnv), in a session of its own,
// holding the server in a process tree of its own ("wineagent"), and exiting (server stopped)
// when the last user is gone.
//
// Every wait here is the kernel's: a blocking flock (fsutil, in a goroutine so a context can
// end it), never a timer. Users are counted by the kernel: each user holds a shared flock on
// .lab-users.lock for as long as it uses the prefix (Use: the hostagent's wine task), which
// the kernel drops when the user dies, SIGKILL included. The warm agent waits in a blocking
// exclusive flock on the same file; the kernel grants it when no user is left, and the agent
// keeps it until it exits, so a user that arrives while the agent is shutting down waits for
// its shared lock until the agent is gone, then starts a new agent. (An inotify IN_CLOSE watch
// on the file would also wake on the last close, but the kernel reports the close before it
// drops the closing holder's flock, so a check made on the event can miss the last user
// leaving; the blocking flock is the event itself.)
//
// .lab-agent.lock is held by the live agent for its whole life (a pid alone can be reused):
// waiting for an agent to exit is a shared flock on it (StopUnused), granted at its exit.
// That is sound where a pidfd would need the pid from a file first. .lab-warm.lock is held
// from the agent's birth until it says warm or failed: the starter takes it, hands it to the
// agent as an inherited descriptor (a flock belongs to the open file), and every user then
// waits for warmth with a shared flock on it and reads the outcome from .lab-agent.json,
// which the agent writes before letting go (and which lab status shows). An agent that dies
// lets go too, and its state then says so. .lab-start.lock serialises starters, .lab-stop.lock
// is held by whoever looks at the users (the agent deciding to stop holds it until it exits,
// so StopUnused never mistakes a stopping agent's exclusive lock for a user), .lab-agent.log
// is the agent's stderr.
const (
	usersLock = ".lab-users.lock"
	agentLock = ".lab-agent.lock"
	warmLock  = ".lab-warm.lock"
	startLock = ".lab-start.lock"
	stopLock  = ".lab-stop.lock"
	agentFile = ".lab-agent.json"
	agentLog  = ".lab-agent.log"
	// AgentEnv makes this binary a prefix's agent (see init): a JSON agentConfig.
	AgentEnv = "LAB_WINE_AGENT"
	// warmFD is the descriptor the agent inherits holding .lab-warm.lock (ExtraFiles[0]).
	warmFD = 3
)

// AgentState is what a prefix's agent publishes in .lab-agent.json.
type AgentState struct {
	PID     int       `json:"pid"`
	State   string    `json:"state"` // "warming", "warm", "failed", "stopping"
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
}

type agentConfig struct {
	Dir         string   `json:"dir"`
	Loader      string   `json:"loader"`
	Server      string   `json:"server"`
	WineVersion string   `json:"wine_version"`
	Programs    []string `json:"programs,omitempty"`
}

func init() {
	if v, ok := os.LookupEnv(AgentEnv); ok {
		os.Exit(agentMain(v))
	}
}

// Lease is one user's hold on a prefix (Use). The prefix's agent keeps the server warm while
// any lease is held; a process that dies releases its lease.
type Lease struct {
	l *fsutil.Lock
}

// Release ends the lease. When it was the last, the agent stops the server at once.
func (l *Lease) Release() error {
	if l == nil || l.l == nil {
		return nil
	}
	err := l.l.Unlock()
	l.l = nil
	return err
}

// Use makes the caller a user of the prefix until the Lease is released (or the caller dies)
// and returns once the prefix is warm: it starts the prefix's agent when none runs (the
// agent warms the prefix, see Warm) or joins the running one. Several machines' Use of one
// prefix share one wineserver, which none of their process trees holds.
func (p *Prefix) Use(ctx context.Context) (*Lease, error) {
	users, err := fsutil.LockShared(ctx, filepath.Join(p.Dir, usersLock))
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	lease := &Lease{l: users}
	if err := p.ensureAgent(ctx); err != nil {
		lease.Release()
		return nil, err
	}
	return lease, nil
}

// ensureAgent starts the agent if none runs, then waits until it says warm (or failed).
func (p *Prefix) ensureAgent(ctx context.Context) error {
	unlock, err := lockFile(ctx, filepath.Join(p.Dir, startLock))
	if err != nil {
		return err
	}
	defer unlock()
	for {
		if !AgentRunning(p.Dir) {
			if err := p.startAgent(ctx); err != nil {
				return err
			}
		}
		// Granted once the agent says warm or failed, or dies.
		warm, err := fsutil.LockShared(ctx, filepath.Join(p.Dir, warmLock))
		if err != nil {
			return fmt.Errorf("wineprefix: waiting for %s to warm: %w", p.Dir, err)
		}
		warm.Unlock()
		st, err := ReadAgentState(p.Dir)
		switch {
		case err == nil && st.State == "warm":
			return nil
		case err == nil && st.State == "failed":
			return fmt.Errorf("wineprefix: warming %s: %s (log: %s)", p.Dir, st.Error, filepath.Join(p.Dir, agentLog))
		case err == nil && st.State == "stopping" && AgentRunning(p.Dir):
			// Told to stop (SIGTERM) while this user arrived: start the next one once it is gone.
			if err := waitAgentExit(ctx, p.Dir); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("wineprefix: the agent of %s exited (log: %s)", p.Dir, filepath.Join(p.Dir, agentLog))
	}
}

// startAgent starts an agent holding .lab-warm.lock from its birth. It first waits for any
// earlier agent still warming (whose starter gave up): that one may be about to hold the
// prefix, and then no new agent is started.
func (p *Prefix) startAgent(ctx context.Context) error {
	warm, err := fsutil.LockFile(ctx, filepath.Join(p.Dir, warmLock))
	if err != nil {
		return fmt.Errorf("wineprefix: waiting for %s to warm: %w", p.Dir, err)
	}
	defer warm.Unlock() // the agent's inherited copy keeps the lock
	if AgentRunning(p.Dir) {
		return nil
	}
	os.Remove(filepath.Join(p.Dir, agentFile))
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("wineprefix: start the agent: %w", err)
	}
	cfg, _ := json.Marshal(agentConfig{Dir: p.Dir, Loader: p.Loader, Server: p.Server, WineVersion: p.WineVersion, Programs: p.Programs})
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fi, err := os.Stat(filepath.Join(p.Dir, agentLog)); err == nil && fi.Size() > 1<<20 {
		flags |= os.O_TRUNC // one line or two per start: bounded across runs
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, agentLog), flags, 0o644)
	if err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(self)
	// Not in the caller's process tree (the marker of a fallback-mode tree is inherited):
	// the agent outlives the machine that started it while others use the prefix.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, proctree.OwnerEnv+"=") && !strings.HasPrefix(kv, AgentEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, AgentEnv+"="+string(cfg))
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{warm.File()} // warmFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("wineprefix: start the agent: %w", err)
	}
	go cmd.Wait() // reaped while the starter lives; init reaps it after
	return nil
}

// waitAgentExit returns once no agent holds the prefix at dir (or ctx ends).
func waitAgentExit(ctx context.Context, dir string) error {
	l, err := fsutil.LockShared(ctx, filepath.Join(dir, agentLock))
	if err != nil {
		return fmt.Errorf("wineprefix: waiting for the agent of %s to exit: %w", dir, err)
	}
	return l.Unlock()
}

// AgentRunning reports whether a live agent holds the prefix at dir.
func AgentRunning(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, agentLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == syscall.EWOULDBLOCK
}

// InUse reports whether any user (a running machine) holds a lease on the prefix at dir.
func InUse(dir string) bool {
	f, err := os.Open(filepath.Join(dir, usersLock))
	if err != nil {
		return false
	}
	defer f.Close()
	fd := int(f.Fd())
	if syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) != syscall.EWOULDBLOCK {
		return false // nobody holds it
	}
	// Held: by users (shared locks, so a shared one is granted beside them) or by an agent
	// that saw the last user go (exclusive, so none is).
	return syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB) == nil
}

// ReadAgentState reads what the prefix's agent last published.
func ReadAgentState(dir string) (*AgentState, error) {
	b, err := os.ReadFile(filepath.Join(dir, agentFile))
	if err != nil {
		return nil, err
	}
	var st AgentState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("wineprefix: %s: %w", agentFile, err)
	}
	return &st, nil
}

// ErrInUse: the prefix has users (running machines); it was left alone.
var ErrInUse = errors.New("wineprefix: the prefix is in use by a running machine")

// StopUnused stops the prefix's server when no machine uses it: it waits (up to ctx) for the
// agent to stop the server and exit, or, with no agent, runs Shutdown for whatever a killed
// agent or an older lab left. With users it returns ErrInUse and changes nothing.
func (p *Prefix) StopUnused(ctx context.Context) error {
	for {
		// Blocks while an agent that saw its last user go stops (it holds this until exit).
		unlock, err := lockFile(ctx, filepath.Join(p.Dir, stopLock))
		if err != nil {
			return err
		}
		switch {
		case InUse(p.Dir):
			unlock()
			return ErrInUse
		case !AgentRunning(p.Dir):
			defer unlock()
			return p.Shutdown(ctx)
		}
		unlock() // the agent has no user: its users lock is granted, it stops now
		if err := waitAgentExit(ctx, p.Dir); err != nil {
			return err
		}
	}
}

func writeAgentState(dir string, st AgentState) {
	st.PID, st.Updated = os.Getpid(), time.Now()
	b, _ := json.MarshalIndent(st, "", "  ")
	fsutil.WriteFile(filepath.Join(dir, agentFile), append(b, '\n'), 0o644)
}

// agentMain is the agent: warm the prefix in a process tree of its own, then keep it warm
// until no user holds a lease (or SIGTERM), then stop the server and exit.
func agentMain(arg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("agent", os.Getpid())
	// The warm lock, inherited: not for the server and Wine programs started below.
	syscall.CloseOnExec(warmFD)
	warm := os.NewFile(warmFD, warmLock)
	defer warm.Close()
	var cfg agentConfig
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil || cfg.Dir == "" {
		log.Error("bad configuration", AgentEnv, arg, "err", err)
		return 2
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	// Blocking: the starter saw no agent, so only a probe (AgentRunning, for a moment) or an
	// agent on its way out holds it.
	lock, err := fsutil.LockFile(context.Background(), filepath.Join(cfg.Dir, agentLock))
	if err != nil {
		log.Error("agent lock", "err", err)
		return 1
	}
	defer lock.Unlock()
	users, err := os.OpenFile(filepath.Join(cfg.Dir, usersLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		log.Error("users lock", "err", err)
		return 1
	}
	defer users.Close()
	writeAgentState(cfg.Dir, AgentState{State: "warming"})
	tree, err := proctree.Open(proctree.Options{Name: "wineagent", Logger: log})
	if err != nil {
		writeAgentState(cfg.Dir, AgentState{State: "failed", Error: err.Error()})
		return 1
	}
	defer tree.Close()
	p := &Prefix{Dir: cfg.Dir, Loader: cfg.Loader, Server: cfg.Server, WineVersion: cfg.WineVersion, Programs: cfg.Programs, Prepare: tree.Prepare}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = p.Warm(ctx)
	cancel()
	if err != nil {
		log.Error("warm", "prefix", cfg.Dir, "err", err)
		writeAgentState(cfg.Dir, AgentState{State: "failed", Error: err.Error()})
		warm.Close()
		stop(p, log)
		return 1
	}
	writeAgentState(cfg.Dir, AgentState{State: "warm"})
	warm.Close()
	log.Info("prefix warm", "prefix", cfg.Dir, "wine", cfg.WineVersion)
	// Exclusive only when no user holds it; kept until we exit, so a new user waits for its
	// lease until this agent is gone and then starts the next one.
	unused := make(chan error, 1)
	go func() { unused <- flockWait(users, syscall.LOCK_EX) }()
	select {
	case <-term:
		log.Info("SIGTERM: stopping the server", "prefix", cfg.Dir)
	case err := <-unused:
		if err != nil {
			log.Error("users lock", "err", err)
		}
		// Held until exit: StopUnused looking at the users now waits for us to be gone.
		stopping, err := fsutil.LockFile(context.Background(), filepath.Join(cfg.Dir, stopLock))
		if err != nil {
			log.Error("stop lock", "err", err)
		}
		defer stopping.Unlock()
		log.Info("no machine uses the prefix: stopping the server", "prefix", cfg.Dir)
	}
	writeAgentState(cfg.Dir, AgentState{State: "stopping"})
	stop(p, log)
	os.Remove(filepath.Join(cfg.Dir, agentFile))
	return 0
}

// flockWait waits in flock(2) on f (restarted after a signal).
func flockWait(f *os.File, how int) error {
	for {
		if err := syscall.Flock(int(f.Fd()), how); err != syscall.EINTR {
			return err
		}
	}
}

func stop(p *Prefix, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "prefix", p.Dir, "err", err)
	}
}
