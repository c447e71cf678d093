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
)

// One prefix may serve several machines at once (lab's default: one Windows side per user, as
// every WSL distribution sees the same C:). Its wineserver and Wine's services then must not
// live in any one machine's process tree: that machine's tree is killed when it goes down
// (package proctree), and the server would die under the others. So a prefix in use is kept
// warm by its own small agent: this binary re-executed (AgentEnv), in a session of its own,
// holding the server in a process tree of its own ("wineagent"), and exiting (server stopped)
// when the last user is gone.
//
// Users are counted by the kernel: each user holds a shared flock on .lab-users.lock for as
// long as it uses the prefix (Use: the hostagent's wine task), which the kernel drops when the
// user dies, SIGKILL included. The agent polls for an exclusive lock on the same file; it
// gets it only when no user is left. A user that arrives while the agent is shutting down
// waits for its shared lock until the agent is gone, then starts a new agent. .lab-agent.lock
// is held by the live agent (a pid alone can be reused), .lab-start.lock serialises starters,
// .lab-stop.lock is held by whoever looks at the users (the agent deciding to stop holds it
// until it exits, so StopUnused never mistakes a stopping agent's lock for a user),
// .lab-agent.json says what the agent is doing, .lab-agent.log is its stderr.
const (
	usersLock = ".lab-users.lock"
	agentLock = ".lab-agent.lock"
	startLock = ".lab-start.lock"
	stopLock  = ".lab-stop.lock"
	agentFile = ".lab-agent.json"
	agentLog  = ".lab-agent.log"
	// AgentEnv makes this binary a prefix's agent (see init): a JSON agentConfig.
	AgentEnv = "LAB_WINE_AGENT"
)

// agentPoll is how often the agent looks for users and users look for the agent's state.
const agentPoll = 250 * time.Millisecond

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
	f *os.File
}

// Release ends the lease. When it was the last, the agent stops the server within a second.
func (l *Lease) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Use makes the caller a user of the prefix until the Lease is released (or the caller dies)
// and returns once the prefix is warm: it starts the prefix's agent when none runs (the
// agent warms the prefix, see Warm) or joins the running one. Several machines' Use of one
// prefix share one wineserver, which none of their process trees holds.
func (p *Prefix) Use(ctx context.Context) (*Lease, error) {
	users, err := lockShared(ctx, filepath.Join(p.Dir, usersLock))
	if err != nil {
		return nil, err
	}
	lease := &Lease{f: users}
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
	var exited <-chan struct{} // the agent this call started; nil: one was running
	if !AgentRunning(p.Dir) {
		os.Remove(filepath.Join(p.Dir, agentFile))
		if exited, err = p.startAgent(); err != nil {
			return err
		}
	}
	for {
		st, err := ReadAgentState(p.Dir)
		if err == nil {
			switch st.State {
			case "warm":
				return nil
			case "failed":
				return fmt.Errorf("wineprefix: warming %s: %s (log: %s)", p.Dir, st.Error, filepath.Join(p.Dir, agentLog))
			}
		}
		if err != nil && exited == nil && !AgentRunning(p.Dir) {
			return fmt.Errorf("wineprefix: the agent of %s exited (log: %s)", p.Dir, filepath.Join(p.Dir, agentLog))
		}
		select {
		case <-exited:
			if st, err := ReadAgentState(p.Dir); err == nil && st.State == "warm" {
				continue // another agent won the lock and is warm
			}
			if AgentRunning(p.Dir) {
				exited = nil // another agent won the lock: wait for it
				continue
			}
			return fmt.Errorf("wineprefix: the agent of %s exited at start (log: %s)", p.Dir, filepath.Join(p.Dir, agentLog))
		case <-ctx.Done():
			return fmt.Errorf("wineprefix: waiting for %s to warm: %w", p.Dir, ctx.Err())
		case <-time.After(agentPoll):
		}
	}
}

func (p *Prefix) startAgent() (<-chan struct{}, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("wineprefix: start the agent: %w", err)
	}
	cfg, _ := json.Marshal(agentConfig{Dir: p.Dir, Loader: p.Loader, Server: p.Server, WineVersion: p.WineVersion, Programs: p.Programs})
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fi, err := os.Stat(filepath.Join(p.Dir, agentLog)); err == nil && fi.Size() > 1<<20 {
		flags |= os.O_TRUNC // one line or two per start: bounded across runs
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, agentLog), flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("wineprefix: start the agent: %w", err)
	}
	exited := make(chan struct{})
	go func() { // reaped while the starter lives; init reaps it after
		cmd.Wait()
		close(exited)
	}()
	return exited, nil
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
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == syscall.EWOULDBLOCK
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
		unlock() // the agent sees no user and stops within a poll
		select {
		case <-ctx.Done():
			return fmt.Errorf("wineprefix: the agent of %s did not stop: %w", p.Dir, ctx.Err())
		case <-time.After(agentPoll):
		}
	}
}

func writeAgentState(dir string, st AgentState) {
	st.PID, st.Updated = os.Getpid(), time.Now()
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(dir, agentFile)
	if os.WriteFile(path+".tmp", append(b, '\n'), 0o644) == nil {
		os.Rename(path+".tmp", path)
	}
}

// agentMain is the agent: warm the prefix in a process tree of its own, then keep it warm
// until no user holds a lease (or SIGTERM), then stop the server and exit.
func agentMain(arg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("agent", os.Getpid())
	var cfg agentConfig
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil || cfg.Dir == "" {
		log.Error("bad configuration", AgentEnv, arg, "err", err)
		return 2
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, agentLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		log.Error("agent lock", "err", err)
		return 1
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return 0 // another agent holds the prefix
	}
	users, err := os.OpenFile(filepath.Join(cfg.Dir, usersLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		log.Error("users lock", "err", err)
		return 1
	}
	defer users.Close()
	stopper, err := os.OpenFile(filepath.Join(cfg.Dir, stopLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		log.Error("stop lock", "err", err)
		return 1
	}
	defer stopper.Close()
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
		stop(p, log)
		return 1
	}
	writeAgentState(cfg.Dir, AgentState{State: "warm"})
	log.Info("prefix warm", "prefix", cfg.Dir, "wine", cfg.WineVersion)
	tick := time.NewTicker(agentPoll)
	defer tick.Stop()
	for {
		select {
		case <-term:
			log.Info("SIGTERM: stopping the server", "prefix", cfg.Dir)
		case <-tick.C:
			// Exclusive only when no user holds it; held until we exit, so a new user waits
			// for its lease until this agent is gone and then starts the next one.
			if syscall.Flock(int(stopper.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				continue // StopUnused is looking
			}
			if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				syscall.Flock(int(stopper.Fd()), syscall.LOCK_UN)
				continue
			}
			log.Info("no machine uses the prefix: stopping the server", "prefix", cfg.Dir)
		}
		writeAgentState(cfg.Dir, AgentState{State: "stopping"})
		stop(p, log)
		os.Remove(filepath.Join(cfg.Dir, agentFile))
		return 0
	}
}

func stop(p *Prefix, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "prefix", p.Dir, "err", err)
	}
}

// lockShared takes a shared flock on path (created if missing), polling so ctx can end the
// wait; the returned file holds it until closed.
func lockShared(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("wineprefix: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wineprefix: waiting for %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
