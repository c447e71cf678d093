package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay serves launch requests from guest interpreters. One Relay may serve several
// listeners at once (kernel vsock, the userspace backend, a Unix socket); MaxSessions
// bounds them together.
type Relay struct {
	cfg    Config
	reaper *reaper
	slots  chan struct{} // one per running session (MaxSessions)
	pre    *preauth      // connections before the token (MaxPending)
	nextID atomic.Uint64

	subOnce sync.Once
	subErr  error

	sessions, launched, refused, errs, bytesIn, bytesOut atomic.Uint64
	active, waiting                                      atomic.Int64
}

// Stats are the relay's counters since NewRelay.
type Stats struct {
	Sessions uint64 // connections accepted
	Active   int64  // authenticated sessions being served now (at most MaxSessions)
	Pending  int64  // connections that have not presented the token yet (at most MaxPending)
	Waiting  int64  // authorised launches waiting for a session slot
	Launched uint64 // host programs started
	Refused  uint64 // requests refused: authentication, policy, malformed or oversize requests
	Errors   uint64 // sessions that failed after authentication (start failures, lost connections, protocol errors)
	BytesIn  uint64 // stdin bytes delivered to host programs
	BytesOut uint64 // stdout and stderr bytes sent to guests
	Orphans  uint64 // orphaned descendants reaped (Config.Subreaper)
}

// NewRelay checks cfg and returns a relay.
func NewRelay(cfg Config) (*Relay, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rp := newReaper()
	rp.procs = c.Procs
	return &Relay{cfg: c, reaper: rp, slots: make(chan struct{}, c.MaxSessions), pre: newPreauth(c.MaxPending)}, nil
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.reaper.mu.Lock()
	orphans := r.reaper.orphans
	r.reaper.mu.Unlock()
	return Stats{
		Sessions: r.sessions.Load(),
		Active:   r.active.Load(),
		Pending:  int64(r.pre.len()),
		Waiting:  r.waiting.Load(),
		Launched: r.launched.Load(),
		Refused:  r.refused.Load(),
		Errors:   r.errs.Load(),
		BytesIn:  r.bytesIn.Load(),
		BytesOut: r.bytesOut.Load(),
		Orphans:  uint64(orphans),
	}
}

// Serve accepts connections on l until ctx ends or l fails, then drains: it stops
// accepting, lets the running sessions finish for up to Config.DrainTimeout, then kills
// their process groups. It closes l. It returns nil after a drain caused by ctx, or the
// listener's error.
func (r *Relay) Serve(ctx context.Context, l net.Listener) error {
	if r.cfg.Subreaper {
		r.subOnce.Do(func() { r.subErr = r.reaper.becomeSubreaper(nil) })
		if r.subErr != nil {
			return fmt.Errorf("host: become child subreaper: %w", r.subErr)
		}
	}
	// Sessions get their own context: ctx ending starts the drain, and only the drain's
	// deadline cancels them.
	sctx, kill := context.WithCancel(context.WithoutCancel(ctx))
	defer kill()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	var serveErr error
	backoff := 5 * time.Millisecond
	// The loop never waits for a session slot: a connection is only a session once it
	// has authenticated, and unauthenticated ones are bounded by MaxPending on their own
	// (see serveConn), so idle peers cannot keep real launches in the listen backlog.
	for ctx.Err() == nil {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				r.cfg.Logger.Warn("relay: accept failed; retrying", "err", err)
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			serveErr = fmt.Errorf("host: accept: %w", err)
			break
		}
		backoff = 5 * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serveConn(sctx, ctx.Done(), conn)
		}()
	}
	l.Close()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	default:
		r.cfg.Logger.Info("relay: draining", "active", r.active.Load(), "grace", r.cfg.DrainTimeout)
		t := time.NewTimer(r.cfg.DrainTimeout)
		select {
		case <-done:
			t.Stop()
		case <-t.C:
			r.cfg.Logger.Warn("relay: drain deadline reached; killing the remaining host programs", "active", r.active.Load())
			kill()
			<-done
		}
	}
	return serveErr
}

// isTemporary reports accept errors worth retrying (out of file descriptors, aborted
// connections).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// preauth is the budget of connections that have not presented the token yet. It never
// turns a newcomer away: over budget, the oldest connection of the peer that holds the
// most is evicted (answered EAGAIN), so a peer flooding idle connections mostly evicts
// its own, and a real launch, which sends its token at once, is through long before it
// could be the oldest.
type preauth struct {
	mu    sync.Mutex
	max   int
	seq   uint64
	conns map[*pendingConn]struct{}
	peers map[string]int // pending connections per peer key
}

type pendingConn struct {
	conn    net.Conn
	key     string // peerKey; "" when the peer cannot be told
	seq     uint64 // admission order
	evicted atomic.Bool
}

func newPreauth(max int) *preauth {
	return &preauth{max: max, conns: map[*pendingConn]struct{}{}, peers: map[string]int{}}
}

func (p *preauth) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// admit adds pc, evicting one pending connection first when the budget is full.
func (p *preauth) admit(pc *pendingConn) {
	p.mu.Lock()
	var victim *pendingConn
	if len(p.conns) >= p.max {
		for c := range p.conns {
			if victim == nil || p.peers[c.key] > p.peers[victim.key] ||
				p.peers[c.key] == p.peers[victim.key] && c.seq < victim.seq {
				victim = c
			}
		}
		p.removeLocked(victim)
	}
	p.seq++
	pc.seq = p.seq
	p.conns[pc] = struct{}{}
	p.peers[pc.key]++
	p.mu.Unlock()
	if victim != nil {
		// Mark first, then wake its read: the handshake checks the mark after setting
		// its own deadline, so the eviction is never lost.
		victim.evicted.Store(true)
		victim.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// leave removes pc; false when it had been evicted.
func (p *preauth) leave(pc *pendingConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[pc]; !ok {
		return false
	}
	p.removeLocked(pc)
	return true
}

func (p *preauth) removeLocked(pc *pendingConn) {
	delete(p.conns, pc)
	if p.peers[pc.key]--; p.peers[pc.key] <= 0 {
		delete(p.peers, pc.key)
	}
}
